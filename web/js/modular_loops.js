// Modular Loops: the frontend side of loop nodes and block nodes.
// - A loop node shows its block sockets as a list that grows: always exactly one free socket after
//   the connected ones, which are numbered in run order and labelled with the attached block's title.
// - Loop and block nodes are coloured apart; a running loop shows "step n/N" (canvas renderer; Nodes 2.0
//   shows the frontend's own progress bar on the node); the block node named in an error is outlined in
//   red (drawn on the canvas, or on the node's element in Nodes 2.0). Inside a subgraph both marks go on
//   the node and on the subgraph node(s) holding it.
// - Save State shows the name of the file it wrote.
// - A workflow node ("<Class> (workflows)") expands in place into diffusers' chain of step and loop nodes.
// - A workflow naming a loop, block or diffusers step that is not installed gets a message saying which,
//   and where it came from (for diffusers' own classes: the diffusers release it was saved with).
// Served at /extensions/<pack folder>/js/, three levels below the app root.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

// Nodes with block sockets: state loops, and a denoise loop's SAMPLER and KSampler nodes.
const LOOP_PREFIXES = ["ModularLoop_", "ModularSampler_", "ModularKSampler_"];
const BLOCK_PREFIX = "ModularBlock_";
const STEP_PREFIX = "ModularStep_"; // one of diffusers' pipeline steps (no block sockets, not a block)
const BLOCK_SOCKET = /^block_(\d+)$/;
const BLOCK_TYPE = "LOOP_BLOCK";
const LOOP_COLOR = { color: "#2a4a6a", bgcolor: "#355a7f" };
const BLOCK_COLOR = { color: "#3a5a3a", bgcolor: "#4a6f4a" };
const ORIGIN_PROPERTY = "Modular Loops block";

const isLoop = (type) => LOOP_PREFIXES.some((p) => type?.startsWith(p));
const isOurs = (type) => isLoop(type) || type?.startsWith(BLOCK_PREFIX);
const isStep = (type) => type?.startsWith(STEP_PREFIX);
// Nodes whose origin a saved workflow records (and a missing one is explained).
const isRecorded = (type) => isOurs(type) || isStep(type);
// The workflow's graph: `app.rootGraph` where the frontend has it (it deprecates `app.graph`).
const rootGraph = () => app.rootGraph ?? app.graph;

// --- block sockets ----------------------------------------------------------------------------

// Connectivity through the node's own methods (isInputConnected, getInputLink, getOutputNodes): newer
// frontends deprecate reading `input.link` / `output.links`.
const inputSource = (node, slot) => {
  const link = node.getInputLink(slot);
  return link ? node.graph.getNodeById(link.origin_id) : null;
};

function blockLabel(node, slot, n) {
  const source = inputSource(node, slot);
  return source ? `${n}. ${source.title}` : `block_${n}`;
}

/** Exactly one free block socket after the connected ones, numbered block_1.. in socket order. */
export function arrangeBlockSockets(node) {
  if (!node.inputs || node.__mlArranging) return;
  node.__mlArranging = true;
  try {
    for (let i = node.inputs.length - 1; i >= 0; i--) {
      if (BLOCK_SOCKET.test(node.inputs[i].name) && !node.isInputConnected(i)) node.removeInput(i);
    }
    let n = 0;
    for (const [slot, input] of node.inputs.entries()) {
      if (!BLOCK_SOCKET.test(input.name)) continue;
      n += 1;
      input.name = input.localized_name = `block_${n}`;
      input.label = blockLabel(node, slot, n);
    }
    const max = node.constructor.__mlMaxBlocks ?? 16;
    if (n < max) {
      node.addInput(`block_${n + 1}`, BLOCK_TYPE, { shape: 7 });
      const added = node.inputs[node.inputs.length - 1];
      added.localized_name = added.name;
      added.label = added.name;
    }
    const min = node.computeSize();
    node.setSize([Math.max(node.size[0], min[0]), min[1]]);
    node.setDirtyCanvas(true, true);
  } finally {
    node.__mlArranging = false;
  }
}

function scheduleArrange(node) {
  if (node.__mlScheduled) return;
  node.__mlScheduled = true;
  // One undo step for the user's change and our re-arrangement: the change tracker skips its checks
  // between beforeChange and afterChange.
  const graph = node.graph;
  graph?.beforeChange();
  // After LiteGraph finishes the connect / disconnect / configure that called us (a connect to a
  // used socket first disconnects it: removing sockets right then would move the target slot).
  setTimeout(() => {
    node.__mlScheduled = false;
    try {
      if (node.graph) arrangeBlockSockets(node);
    } finally {
      graph?.afterChange();
    }
  }, 0);
}

function relabelLoopsFedBy(blockNode) {
  for (let slot = 0; slot < (blockNode.outputs?.length ?? 0); slot++) {
    for (const target of blockNode.getOutputNodes(slot) ?? []) {
      if (isLoop(target?.type)) scheduleArrange(target);
    }
  }
}

// --- progress and errors ------------------------------------------------------------------------

// The server names a node by its execution id: its id in the root graph, or, inside a subgraph, the ids
// of the subgraph nodes leading to it and its own joined by ":" ("6:3"; deeper nesting adds parts).
// Marks go on every node of that path: the node itself (seen when its subgraph is opened) and each
// subgraph node holding it (seen from the graph above). They are set on the node objects, so drawing
// needs no look-up.
const stepOf = new Map(); // execution id -> [value, max] while it runs
const stepNodes = new Map(); // execution id -> the nodes showing its step
let failedBlock = null; // execution id of the block named in the last error
let failedNodes = []; // the nodes outlined for it
const FAILED_ATTR = "data-modular-loops-failed";

const byId = (graph, id) => graph?.getNodeById?.(Number(id)) ?? graph?.getNodeById?.(id) ?? null;

/** The nodes an execution id passes through, from the root graph's one down to the node ([] if one is gone). */
function nodesOnPath(executionId) {
  const nodes = [];
  let graph = rootGraph();
  for (const id of String(executionId ?? "").split(":")) {
    const node = id ? byId(graph, id) : null;
    if (!node) return [];
    nodes.push(node);
    graph = node.subgraph; // a subgraph node's inner graph; undefined for any other node
  }
  return nodes;
}

const redraw = () => rootGraph()?.setDirtyCanvas(true, false);

/** The step text and the red outline, in the node's own coordinates (canvas renderer). */
function drawMarks(node, ctx) {
  if (node.__mlStep && !node.flags?.collapsed) {
    ctx.save();
    ctx.font = "12px sans-serif";
    ctx.fillStyle = "#ddd";
    ctx.textAlign = "right";
    ctx.fillText(`step ${node.__mlStep[0]}/${node.__mlStep[1]}`, node.size[0] - 10, -LiteGraph.NODE_TITLE_HEIGHT * 0.35);
    ctx.restore();
  }
  if (node.__mlFailed) {
    ctx.save();
    ctx.strokeStyle = "#ff4444";
    ctx.lineWidth = 3;
    const h = LiteGraph.NODE_TITLE_HEIGHT;
    ctx.strokeRect(-3, -h - 3, node.size[0] + 6, node.size[1] + h + 6);
    ctx.restore();
  }
}

/** Subgraph nodes are not our classes: the ones holding a marked node draw the marks from their own hook. */
function drawOnHolders(nodes) {
  for (const node of nodes.slice(0, -1)) {
    if (node.__mlDraws) continue;
    node.__mlDraws = true;
    const own = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      const r = own?.apply(this, arguments);
      drawMarks(this, ctx);
      return r;
    };
  }
}

/** Nodes 2.0 draws the shown graph's nodes as elements, not on the canvas: outline the failed ones there. */
function outlineFailedElements() {
  const shown = app.canvas?.graph ?? rootGraph();
  for (const el of document.querySelectorAll(".lg-node[data-node-id]")) {
    const failed = !!byId(shown, el.dataset.nodeId)?.__mlFailed;
    if (failed === el.hasAttribute(FAILED_ATTR)) continue;
    el.style.outline = failed ? "3px solid #ff4444" : "";
    el.style.outlineOffset = failed ? "3px" : "";
    el.toggleAttribute(FAILED_ATTR, failed);
  }
}

function setFailedBlock(executionId) {
  for (const node of failedNodes) delete node.__mlFailed;
  failedBlock = executionId != null ? String(executionId) : null;
  failedNodes = failedBlock != null ? nodesOnPath(failedBlock) : [];
  for (const node of failedNodes) node.__mlFailed = true;
  drawOnHolders(failedNodes);
  outlineFailedElements();
  redraw();
}

function clearStep(executionId) {
  for (const node of stepNodes.get(executionId) ?? []) delete node.__mlStep;
  stepNodes.delete(executionId);
  stepOf.delete(executionId);
}

api.addEventListener("progress", ({ detail }) => {
  const id = String(detail?.node);
  const nodes = nodesOnPath(id);
  if (!isLoop(nodes.at(-1)?.type)) return;
  clearStep(id);
  const step = [detail.value, detail.max];
  stepOf.set(id, step);
  stepNodes.set(id, nodes);
  for (const node of nodes) node.__mlStep = step;
  drawOnHolders(nodes);
  redraw();
});
for (const event of ["executing", "execution_success", "execution_interrupted", "execution_error"]) {
  api.addEventListener(event, ({ detail }) => {
    const running = event === "executing" ? String(detail?.node ?? detail ?? "") : "";
    for (const id of [...stepOf.keys()]) if (id !== running) clearStep(id);
    redraw();
  });
}
api.addEventListener("execution_start", () => setFailedBlock(null));
// The server names the block node at fault as data, just before ComfyUI's execution_error.
api.addEventListener("modular_loops.failed_block", ({ detail }) => setFailedBlock(detail?.node));

// --- missing blocks -------------------------------------------------------------------------------

let loadingOurs = new Map(); // type -> saved origin property, for the workflow being loaded
let installed = {}; // node id -> {origin, source, ...}, from /modular_loops/blocks
let diffusersVersion = null; // this server's diffusers, from /modular_loops/blocks

/** Record where the class came from (for diffusers' own: which diffusers), so a workflow opened where it is
 * missing can say so. */
function recordOrigin(nodeType, type) {
  const onAdded = nodeType.prototype.onAdded;
  nodeType.prototype.onAdded = function () {
    const r = onAdded?.apply(this, arguments);
    const origin = installed[type];
    if (origin) {
      this.properties ??= {};
      this.properties[ORIGIN_PROPERTY] = { origin: origin.origin, source: origin.source };
      if (origin.origin === "diffusers" && diffusersVersion) this.properties[ORIGIN_PROPERTY].diffusers_version = diffusersVersion;
    }
    return r;
  };
}

function kindOf(type) {
  return isLoop(type) ? "loop wrapper" : isStep(type) ? "diffusers step" : "loop block";
}

function diffusersText(kind, name, saved) {
  const file = saved?.source ? ` (${saved.source})` : "";
  const here = `this server's diffusers${diffusersVersion ? ` (${diffusersVersion})` : ""} has no such class`;
  const release = saved?.diffusers_version;
  if (release) return `${kind} ${name} is one of diffusers' own${file}, saved with diffusers ${release}; ${here}: install diffusers ${release} (or a release that has ${name}) and restart`;
  return `${kind} ${name} is one of diffusers' own${file}; the workflow does not record which diffusers it was saved with, and ${here}: install a diffusers release that has ${name} and restart`;
}

function originText(type, saved) {
  const name = type.slice(type.indexOf("_") + 1);
  const kind = kindOf(type);
  const origin = saved?.origin ?? (isStep(type) ? "diffusers" : undefined); // steps are only ever diffusers' own
  if (origin === "diffusers") return diffusersText(kind, name, saved);
  if (origin === "pack") return `${kind} ${name} shipped with Modular Loops (${saved.source}); update or reinstall the pack`;
  if (origin === "custom") return `${kind} ${name} from a diffusers custom-block folder (${saved.source}); put that folder into ComfyUI/models/modular_blocks/ and restart`;
  if (origin) return `${kind} ${name} from a user blocks folder (${saved.source}); put that file into ComfyUI/models/modular_blocks/ and restart`;
  return `${kind} ${name}: not shipped with Modular Loops; it comes from a user blocks folder — put the file defining class ${name} into ComfyUI/models/modular_blocks/ and restart`;
}

// --- Save State: the name it saved -----------------------------------------------------------------

const SAVE_STATE = "ModularStateSave";
const SAVED_WIDGET = "saved";

/** The file Save State wrote, in a widget of the node (not sent with the prompt). */
function showSaved(node, text) {
  let widget = node.widgets?.find((w) => w.name === SAVED_WIDGET);
  if (!widget) widget = node.addWidget("text", SAVED_WIDGET, text, () => {}, { serialize: false });
  widget.value = text;
  const min = node.computeSize();
  node.setSize([Math.max(node.size[0], min[0]), Math.max(node.size[1], min[1])]);
  node.setDirtyCanvas(true, true);
}

// --- the extension --------------------------------------------------------------------------------

// --- a workflow node expanded into its chain of steps ---------------------------------------------

const WORKFLOW_PREFIX = "ModularWorkflow_"; // a family's Auto blocks: one node running a named workflow
const CHAIN_SOCKETS = ["state", "pipeline", "guider", "scheduler"]; // the workflow node's own, not a call's values
const isWorkflow = (type) => type?.startsWith(WORKFLOW_PREFIX);

function setWidget(node, name, value) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget) return false;
  widget.value = value;
  widget.callback?.(value);
  return true;
}

/** What a workflow node gives: widgets away from their default (a call's value given once) and connected sockets. */
function givenOn(node) {
  const spec = node.constructor.__mlInputs ?? {};
  const given = {};
  const sockets = {};
  for (const widget of node.widgets ?? []) {
    if (widget.name === "workflow" || !(widget.name in spec)) continue;
    const declared = spec[widget.name]?.[1]?.default;
    if (widget.value !== declared && !(declared === undefined && widget.value === "")) given[widget.name] = { value: widget.value };
  }
  for (const [slot, input] of (node.inputs ?? []).entries()) {
    const link = node.isInputConnected(slot) ? node.getInputLink(slot) : null;
    if (!link) continue;
    const source = { id: link.origin_id, slot: link.origin_slot };
    if (CHAIN_SOCKETS.includes(input.name)) sockets[input.name] = source;
    else given[input.name.replace(/_link$/, "")] = { link: source, input: input.name };
  }
  return { given, sockets };
}

/** Replace a workflow node by the chain of step and loop nodes diffusers runs for its workflow (GET
 *  /modular_loops/expand): each value given on it goes to the first node of the chain that has that input, its
 *  pipeline / guider / scheduler to every node that takes one, its state to the first, its output's links to the
 *  last. One undo step. -> the new nodes. */
export async function expandWorkflow(node) {
  const graph = node.graph;
  const workflow = node.widgets?.find((w) => w.name === "workflow")?.value;
  const { given, sockets } = givenOn(node);
  const query = new URLSearchParams({ node: node.type, workflow, given: Object.keys(given).join(",") });
  const res = await api.fetchApi(`/modular_loops/expand?${query}`);
  const answer = await res.json();
  if (!res.ok) {
    const detail = `${node.title}: ${answer.error ?? res.statusText}`;
    app.extensionManager?.toast?.add({ severity: "error", summary: "Modular Loops: cannot expand", detail, life: 10000 });
    return [];
  }
  const targets = []; // (node, input slot) fed by the workflow node's output
  for (const other of graph.nodes ?? graph._nodes ?? []) {
    for (const [slot] of (other.inputs ?? []).entries()) {
      const link = other.isInputConnected(slot) ? other.getInputLink(slot) : null;
      if (link && link.origin_id === node.id) targets.push([other, slot]);
    }
  }
  const connect = (source, target, name) => {
    const slot = target.findInputSlot(name);
    if (slot >= 0) graph.getNodeById(source.id)?.connect(source.slot, target, slot);
    return slot >= 0;
  };
  graph.beforeChange?.();
  const made = [];
  try {
    let [x, y] = node.pos;
    for (const item of answer.nodes) {
      const step = LiteGraph.createNode(item.class_type);
      step.pos = [x, y];
      graph.add(step);
      x += step.size[0] + 40;
      for (const [name, value] of Object.entries(item.values ?? {})) setWidget(step, name, value);
      for (const name of item.takes) {
        const g = given[name];
        if (g.link) connect(g.link, step, step.findInputSlot(g.input) >= 0 ? g.input : name);
        else setWidget(step, name, g.value);
      }
      for (const [name, source] of Object.entries(sockets)) {
        if (name !== "state" || !made.length) connect(source, step, name);
      }
      if (made.length) made.at(-1).connect(0, step, step.findInputSlot("state"));
      made.push(step);
    }
    const last = made.at(-1);
    for (const [other, slot] of targets) last.connect(0, other, slot);
    // what stood right of the workflow node moves right of the chain (keeping its own layout): nothing is covered
    const right = (graph.nodes ?? graph._nodes ?? []).filter(
      (other) => other !== node && !made.includes(other) && other.pos[0] > node.pos[0] + node.size[0] / 2);
    const shift = x - Math.min(...right.map((other) => other.pos[0]));
    if (right.length && shift > 0) for (const other of right) other.pos[0] += shift;
    graph.remove(node);
  } finally {
    graph.afterChange?.();
  }
  graph.setDirtyCanvas?.(true, true);
  return made;
}

app.registerExtension({
  name: "ModularLoops",
  expandWorkflow, // read by the browser tests, and handy in the console
  // read by the browser tests, and handy in the console
  failedBlock: () => failedBlock,
  step: (executionId) => stepOf.get(String(executionId)),
  marks: (node) => ({ step: node?.__mlStep ?? null, failed: !!node?.__mlFailed }),

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === SAVE_STATE) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const r = onExecuted?.apply(this, arguments);
        if (output?.text?.[0]) showSaved(this, output.text[0]);
        return r;
      };
      return;
    }
    if (isStep(nodeData.name)) recordOrigin(nodeType, nodeData.name);
    if (isWorkflow(nodeData.name)) {
      nodeType.__mlInputs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
      const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
      nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
        const r = getExtraMenuOptions?.apply(this, arguments);
        options.push({ content: "Expand into steps", callback: () => expandWorkflow(this) });
        return r;
      };
      return;
    }
    if (!isOurs(nodeData.name)) return;
    const loop = isLoop(nodeData.name);
    const style = loop ? LOOP_COLOR : BLOCK_COLOR;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (!this.color) Object.assign(this, style);
      if (loop) arrangeBlockSockets(this);
      return r;
    };

    if (loop) {
      nodeType.__mlMaxBlocks = Object.keys(nodeData.input?.optional ?? {}).filter((k) => BLOCK_SOCKET.test(k)).length;

      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (type, index, connected, link, slot) {
        const r = onConnectionsChange?.apply(this, arguments);
        if (BLOCK_SOCKET.test(slot?.name ?? this.inputs?.[index]?.name ?? "")) scheduleArrange(this);
        return r;
      };

      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function (info) {
        const r = onConfigure?.apply(this, arguments);
        // LiteGraph copies saved inputs over the created ones index by index: drop left-over copies of
        // an input that the saved list already has.
        if (Array.isArray(info?.inputs) && this.inputs.length > info.inputs.length) {
          const saved = new Set(info.inputs.map((i) => i.name));
          this.inputs = this.inputs.filter((input, k) => k < info.inputs.length || !saved.has(input.name));
        }
        scheduleArrange(this);
        return r;
      };
    } else {
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (type) {
        const r = onConnectionsChange?.apply(this, arguments);
        if (type === LiteGraph.OUTPUT) setTimeout(() => this.graph && relabelLoopsFedBy(this), 0);
        return r;
      };
    }

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const r = onDrawForeground?.apply(this, arguments);
      drawMarks(this, ctx);
      return r;
    };

    recordOrigin(nodeType, nodeData.name);
  },

  async setup() {
    // Nodes 2.0 makes a graph's elements when it is shown (a subgraph opened, the root graph again).
    new MutationObserver(() => failedNodes.length && outlineFailedElements())
      .observe(document.body, { childList: true, subtree: true });
    try {
      const res = await api.fetchApi("/modular_loops/blocks");
      if (res.ok) {
        const info = await res.json();
        installed = info.nodes ?? {};
        diffusersVersion = info.diffusers_version ?? null;
      }
    } catch (e) {
      console.warn("[Modular Loops] could not read the installed blocks", e);
    }
  },

  async loadedGraphNode(node) {
    if (isLoop(node.type)) scheduleArrange(node);
  },

  async beforeConfigureGraph(graphData) {
    loadingOurs = new Map();
    // the root graph's nodes and those of its subgraphs
    const nodes = [graphData?.nodes ?? [], ...(graphData?.definitions?.subgraphs ?? []).map((g) => g.nodes ?? [])].flat();
    for (const n of nodes) {
      if (isRecorded(n.type)) loadingOurs.set(n.type, n.properties?.[ORIGIN_PROPERTY]);
    }
  },

  async afterConfigureGraph(missingNodeTypes) {
    const missing = (missingNodeTypes ?? []).map((t) => (typeof t === "string" ? t : t?.type)).filter(isRecorded);
    if (!missing.length) return;
    const lines = [...new Set(missing)].map((t) => originText(t, loadingOurs.get(t)));
    const detail = `This workflow uses ${lines.length === 1 ? "a block" : "blocks"} that ${lines.length === 1 ? "is" : "are"} not installed:\n- ${lines.join("\n- ")}`;
    console.warn(`[Modular Loops] ${detail}`);
    app.extensionManager?.toast?.add({ severity: "warn", summary: "Modular Loops: missing blocks", detail, life: 15000 });
  },
});
