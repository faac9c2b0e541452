// Modular Loops: the frontend side of loop nodes and block nodes.
// - A loop node shows its block sockets as a list that grows: always exactly one free socket after
//   the connected ones, which are numbered in run order and labelled with the attached block's title.
// - Loop and block nodes are coloured apart; a running loop shows "step n/N" (canvas renderer; Nodes 2.0
//   shows the frontend's own progress bar on the node); the block node named in an error is outlined in
//   red (drawn on the canvas, or on the node's element in Nodes 2.0).
// - Save State shows the name of the file it wrote.
// - A workflow naming a loop or block that is not installed gets a message saying which, and where
//   it came from.
// Served at /extensions/<pack folder>/js/, three levels below the app root.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

// Nodes with block sockets: state loops, and a denoise loop's SAMPLER and KSampler nodes.
const LOOP_PREFIXES = ["ModularLoop_", "ModularSampler_", "ModularKSampler_"];
const BLOCK_PREFIX = "ModularBlock_";
const BLOCK_SOCKET = /^block_(\d+)$/;
const BLOCK_TYPE = "LOOP_BLOCK";
const LOOP_COLOR = { color: "#2a4a6a", bgcolor: "#355a7f" };
const BLOCK_COLOR = { color: "#3a5a3a", bgcolor: "#4a6f4a" };
const ORIGIN_PROPERTY = "Modular Loops block";

const isLoop = (type) => LOOP_PREFIXES.some((p) => type?.startsWith(p));
const isOurs = (type) => isLoop(type) || type?.startsWith(BLOCK_PREFIX);
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

const stepOf = new Map(); // node id -> [value, max] while it runs
let failedBlock = null; // node id of the block named in the last error

function findNode(id) {
  return rootGraph()?.getNodeById?.(Number(id)) ?? rootGraph()?.getNodeById?.(id);
}

/** Nodes 2.0 draws nodes as elements, not on the canvas: outline the failed block node's element there. */
function markFailedElement(id, failed) {
  const el = document.querySelector(`.lg-node[data-node-id="${id}"]`);
  if (!el) return;
  el.style.outline = failed ? "3px solid #ff4444" : "";
  el.style.outlineOffset = failed ? "3px" : "";
  el.toggleAttribute("data-modular-loops-failed", failed);
}

api.addEventListener("progress", ({ detail }) => {
  const node = findNode(detail?.node);
  if (!isLoop(node?.type)) return;
  stepOf.set(String(detail.node), [detail.value, detail.max]);
  node.setDirtyCanvas(true, false);
});
for (const event of ["executing", "execution_success", "execution_interrupted", "execution_error"]) {
  api.addEventListener(event, ({ detail }) => {
    const running = event === "executing" ? String(detail?.node ?? detail ?? "") : "";
    for (const id of [...stepOf.keys()]) if (id !== running) stepOf.delete(id);
    rootGraph()?.setDirtyCanvas(true, false);
  });
}
api.addEventListener("execution_start", () => {
  if (failedBlock != null) markFailedElement(failedBlock, false);
  failedBlock = null;
  rootGraph()?.setDirtyCanvas(true, false);
});
// The server names the block node at fault as data, just before ComfyUI's execution_error.
api.addEventListener("modular_loops.failed_block", ({ detail }) => {
  if (failedBlock != null) markFailedElement(failedBlock, false);
  failedBlock = detail?.node != null ? String(detail.node) : null;
  if (failedBlock != null) markFailedElement(failedBlock, true);
  rootGraph()?.setDirtyCanvas(true, false);
});

// --- missing blocks -------------------------------------------------------------------------------

let loadingOurs = new Map(); // type -> saved origin property, for the workflow being loaded
let installed = {}; // node id -> {origin, source}, from /modular_loops/blocks

function originText(type, saved) {
  const name = type.slice(type.indexOf("_") + 1);
  const kind = isLoop(type) ? "loop wrapper" : "loop block";
  if (saved?.origin === "pack") return `${kind} ${name} shipped with Modular Loops (${saved.source}); update or reinstall the pack`;
  if (saved?.origin) return `${kind} ${name} from a user blocks folder (${saved.source}); put that file into ComfyUI/models/modular_blocks/ and restart`;
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

app.registerExtension({
  name: "ModularLoops",
  // read by the browser tests, and handy in the console
  failedBlock: () => failedBlock,
  step: (nodeId) => stepOf.get(String(nodeId)),

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

      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        const r = onDrawForeground?.apply(this, arguments);
        const step = stepOf.get(String(this.id));
        if (step && !this.flags?.collapsed) {
          ctx.save();
          ctx.font = "12px sans-serif";
          ctx.fillStyle = "#ddd";
          ctx.textAlign = "right";
          ctx.fillText(`step ${step[0]}/${step[1]}`, this.size[0] - 10, -LiteGraph.NODE_TITLE_HEIGHT * 0.35);
          ctx.restore();
        }
        return r;
      };
    } else {
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (type) {
        const r = onConnectionsChange?.apply(this, arguments);
        if (type === LiteGraph.OUTPUT) setTimeout(() => this.graph && relabelLoopsFedBy(this), 0);
        return r;
      };

      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        const r = onDrawForeground?.apply(this, arguments);
        if (failedBlock != null && String(this.id) === failedBlock) {
          ctx.save();
          ctx.strokeStyle = "#ff4444";
          ctx.lineWidth = 3;
          const h = LiteGraph.NODE_TITLE_HEIGHT;
          ctx.strokeRect(-3, -h - 3, this.size[0] + 6, this.size[1] + h + 6);
          ctx.restore();
        }
        return r;
      };
    }

    // Record where the class came from, so a workflow opened where it is missing can say so.
    const onAdded = nodeType.prototype.onAdded;
    nodeType.prototype.onAdded = function () {
      const r = onAdded?.apply(this, arguments);
      const origin = installed[nodeData.name];
      if (origin) {
        this.properties ??= {};
        this.properties[ORIGIN_PROPERTY] = { origin: origin.origin, source: origin.source };
      }
      return r;
    };
  },

  async setup() {
    try {
      const res = await api.fetchApi("/modular_loops/blocks");
      if (res.ok) installed = (await res.json()).nodes ?? {};
    } catch (e) {
      console.warn("[Modular Loops] could not read the installed blocks", e);
    }
  },

  async loadedGraphNode(node) {
    if (isLoop(node.type)) scheduleArrange(node);
  },

  async beforeConfigureGraph(graphData) {
    loadingOurs = new Map();
    for (const n of graphData?.nodes ?? []) {
      if (isOurs(n.type)) loadingOurs.set(n.type, n.properties?.[ORIGIN_PROPERTY]);
    }
  },

  async afterConfigureGraph(missingNodeTypes) {
    const missing = (missingNodeTypes ?? []).map((t) => (typeof t === "string" ? t : t?.type)).filter(isOurs);
    if (!missing.length) return;
    const lines = [...new Set(missing)].map((t) => originText(t, loadingOurs.get(t)));
    const detail = `This workflow uses ${lines.length === 1 ? "a block" : "blocks"} that ${lines.length === 1 ? "is" : "are"} not installed:\n- ${lines.join("\n- ")}`;
    console.warn(`[Modular Loops] ${detail}`);
    app.extensionManager?.toast?.add({ severity: "warn", summary: "Modular Loops: missing blocks", detail, life: 15000 });
  },
});
