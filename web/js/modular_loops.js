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

// The names the pack states once (nodes/names.py), read from GET /modular_loops/blocks before any node is registered
// (`init`): node-id prefixes, the block sockets' name, the sockets a diffusers chain hands along.
let NAMES = { prefixes: {}, block_socket: "block_", chain_sockets: [] };
const prefix = (kind) => NAMES.prefixes[kind] ?? "\u0000"; // (a prefix no node type has, before the names are read)
// Nodes with block sockets: state loops, and a denoise loop's SAMPLER and KSampler nodes.
const LOOP_KINDS = ["loop", "sampler", "ksampler"];
let BLOCK_SOCKET = /^block_(\d+)$/;
const blockSocket = (n) => `${NAMES.block_socket}${n}`;
const BLOCK_TYPE = "LOOP_BLOCK";
const LOOP_COLOR = { color: "#2a4a6a", bgcolor: "#355a7f" };
const BLOCK_COLOR = { color: "#3a5a3a", bgcolor: "#4a6f4a" };
const ORIGIN_PROPERTY = "Modular Loops block";

const isLoop = (type) => LOOP_KINDS.some((k) => type?.startsWith(prefix(k)));
const isOurs = (type) => isLoop(type) || type?.startsWith(prefix("block"));
const isStep = (type) => type?.startsWith(prefix("step")); // one of diffusers' pipeline steps (no block sockets)
const isWorkflow = (type) => type?.startsWith(prefix("workflow")); // a family's Auto blocks running a named workflow
// Nodes whose origin a saved workflow records (and a missing one is explained).
const isRecorded = (type) => isOurs(type) || isStep(type) || isWorkflow(type);
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
  return source ? `${n}. ${source.title}` : blockSocket(n);
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
      input.name = input.localized_name = blockSocket(n);
      input.label = blockLabel(node, slot, n);
    }
    const max = node.constructor.__mlMaxBlocks ?? NAMES.max_blocks;
    if (n < max) {
      node.addInput(blockSocket(n + 1), BLOCK_TYPE, { shape: 7 });
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
  if (isWorkflow(type)) return "diffusers workflow node";
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
  // steps and workflow nodes are only ever diffusers' own
  const origin = saved?.origin ?? (isStep(type) || isWorkflow(type) ? "diffusers" : undefined);
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


/** Whether a node's widget is one of the pack's JSON text boxes (a value typed as JSON, e.g. clip_skip on a step). */
function isJsonWidget(node, name) {
  return String(node.constructor.__mlInputs?.[name]?.[1]?.placeholder ?? "").includes("(JSON");
}

function setWidget(node, name, value) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget) return false;
  widget.value = value;
  widget.callback?.(value);
  return true;
}

/** A workflow node shows the media sockets (image, mask, control image, ...) the chosen workflow reads, and those
 *  connected: the others are taken off until a workflow that reads them is chosen (`inputs_of`, from the server). */
export function showWorkflowSockets(node) {
  if (!node?.inputs) return;
  const workflow = node.widgets?.find((w) => w.name === "workflow")?.value;
  const reads = new Set(node.constructor.__mlInputsOf?.[workflow] ?? node.constructor.__mlMedia ?? []);
  const spec = node.constructor.__mlInputs ?? {};
  for (const name of node.constructor.__mlMedia ?? []) {
    const slot = node.inputs.findIndex((i) => i.name === name);
    if (slot >= 0 && !reads.has(name) && !node.isInputConnected(slot)) node.removeInput(slot);
    else if (slot < 0 && reads.has(name)) node.addInput(name, spec[name]?.[0] ?? "*", { tooltip: spec[name]?.[1]?.tooltip });
  }
  const min = node.computeSize?.();
  if (min) node.setSize([node.size[0], min[1]]);
  node.setDirtyCanvas?.(true, true);
}

function scheduleWorkflowSockets(node) {
  if (!node || node.__mlWorkflowScheduled) return;
  node.__mlWorkflowScheduled = true;
  setTimeout(() => {
    node.__mlWorkflowScheduled = false;
    const graph = node.graph;
    if (!graph) return;
    graph.beforeChange?.();
    try {
      showWorkflowSockets(node);
    } finally {
      graph.afterChange?.();
    }
  }, 0);
}

/** What a workflow node gives: widgets away from their default (a call's value given once), its seed (a whole call's
 *  seed is always given: ComfyUI's seed widget, with its control after generate) and connected sockets. */
function givenOn(node) {
  const spec = node.constructor.__mlInputs ?? {};
  const given = {};
  const sockets = {};
  for (const widget of node.widgets ?? []) {
    if (widget.name === "workflow" || !(widget.name in spec)) continue;
    if (widget.name === NAMES.more) {  // the call's other values (JSON): each one given, as its own
      try {
        for (const [name, value] of Object.entries(widget.value ? JSON.parse(widget.value) : {})) given[name] = { value, json: true };
      } catch (e) {
        throw new Error(`${node.title}: '${NAMES.more}' is not valid JSON (${e.message})`);
      }
      continue;
    }
    const options = spec[widget.name]?.[1] ?? {};
    const declared = options.default;
    const away = widget.value !== declared && !(declared === undefined && widget.value === "");
    if (away || options.control_after_generate) given[widget.name] = { value: widget.value };
  }
  for (const [slot, input] of (node.inputs ?? []).entries()) {
    const link = node.isInputConnected(slot) ? node.getInputLink(slot) : null;
    if (!link) continue;
    const source = { id: link.origin_id, slot: link.origin_slot };
    if (NAMES.chain_sockets.includes(input.name)) sockets[input.name] = source; // the node's own, not the call's
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
        else setWidget(step, name, g.json && isJsonWidget(step, name) ? JSON.stringify(g.value) : g.value);
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
    // every declared input, with its options (a workflow node's expansion reads them on the nodes it makes)
    if (isRecorded(nodeData.name)) nodeType.__mlInputs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
    if (isStep(nodeData.name)) recordOrigin(nodeType, nodeData.name);
    if (isWorkflow(nodeData.name)) {
      recordOrigin(nodeType, nodeData.name);
      nodeType.__mlMedia = Object.keys(nodeData.input?.optional ?? {}).filter((n) => !NAMES.chain_sockets.includes(n));
      nodeType.__mlInputsOf = nodeData.input?.required?.workflow?.[1]?.inputs_of ?? {};
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        const node = this;
        const choice = this.widgets?.find((w) => w.name === "workflow");
        if (choice) {
          const callback = choice.callback;
          choice.callback = function () {
            const r2 = callback?.apply(this, arguments);
            scheduleWorkflowSockets(node);
            return r2;
          };
        }
        showWorkflowSockets(this);
        return r;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = onConfigure?.apply(this, arguments);
        scheduleWorkflowSockets(this);
        return r;
      };
      const onWidgetChanged = nodeType.prototype.onWidgetChanged;
      nodeType.prototype.onWidgetChanged = function (name) {
        const r = onWidgetChanged?.apply(this, arguments);
        if (name === "workflow") scheduleWorkflowSockets(this);
        return r;
      };
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

  async init() {
    // Before the node definitions are registered: the names, the installed classes and this server's diffusers.
    try {
      const res = await api.fetchApi("/modular_loops/blocks");
      if (res.ok) {
        const info = await res.json();
        installed = info.nodes ?? {};
        diffusersVersion = info.diffusers_version ?? null;
        NAMES = info.names ?? NAMES;
        BLOCK_SOCKET = new RegExp(`^${NAMES.block_socket}(\\d+)$`);
      }
    } catch (e) {
      console.warn("[Modular Loops] could not read the installed blocks", e);
    }
  },

  async setup() {
    // Nodes 2.0 makes a graph's elements when it is shown (a subgraph opened, the root graph again).
    new MutationObserver(() => failedNodes.length && outlineFailedElements())
      .observe(document.body, { childList: true, subtree: true });
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
