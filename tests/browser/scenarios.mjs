// Browser tier: drives the real ComfyUI page in headless Debian Chromium with playwright-core.
//   node scenarios.mjs <server url> <output dir>
// Runs every scenario in one page and prints one JSON object: {scenario: result} (the assertions are
// in tests/test_browser.py). Screenshots go to <output dir>.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [url, outDir] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
fs.mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 820 } });
// Deprecation notices with the stack that led to them, so a test can tell the extension's from the frontend's own.
await page.addInitScript(() => {
  const warn = console.warn;
  window.__mlDeprecations = [];
  console.warn = function (...args) {
    const text = args.map(String).join(" ");
    if (/deprecat/i.test(text)) window.__mlDeprecations.push({ text, stack: new Error().stack });
    return warn.apply(this, args);
  };
});
const consoleLines = [];
page.on("console", (m) => consoleLines.push({ type: m.type(), text: m.text() }));
page.on("pageerror", (e) => consoleLines.push({ type: "pageerror", text: `${e.message}\n${e.stack ?? ""}` }));

const results = {};
async function scenario(name, fn) {
  try {
    results[name] = { ok: true, ...(await fn()) };
  } catch (e) {
    results[name] = { ok: false, error: String(e?.stack ?? e) };
    await page.screenshot({ path: path.join(outDir, `failed_${name}.png`) }).catch(() => {});
  }
}

async function openApp() {
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.vueAppReady, null, { timeout: 90000 });
  await page.waitForFunction(() => window.app.extensions?.some((e) => e.name === "ModularLoops"), null, { timeout: 30000 });
  await page.waitForTimeout(1000);
  await page.keyboard.press("Escape"); // a first start opens the template browser
  await page.waitForTimeout(300);
}

// Helpers installed in the page once.
async function installHelpers() {
  await page.evaluate(() => {
    const { app, LiteGraph } = window;
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const settle = () => sleep(50);
    const g = () => app.rootGraph ?? app.graph; // the frontend deprecates app.graph
    window.ml = {
      sleep, settle, g,
      nodes2: () => !!document.querySelector("[data-node-id]"),
      clear() { g().clear(); },
      add(type, pos, widgets = {}) {
        const n = LiteGraph.createNode(type);
        n.pos = pos;
        g().add(n);
        for (const [k, v] of Object.entries(widgets)) n.widgets.find((w) => w.name === k).value = v;
        return n.id;
      },
      node: (id) => g().getNodeById(id),
      slot: (id, name) => g().getNodeById(id).inputs.findIndex((i) => i.name === name),
      connect(fromId, toId, inputName, outSlot = 0) {
        const to = g().getNodeById(toId);
        g().getNodeById(fromId).connect(outSlot, to, to.inputs.findIndex((i) => i.name === inputName));
      },
      disconnect(toId, inputName) {
        const to = g().getNodeById(toId);
        to.disconnectInput(to.inputs.findIndex((i) => i.name === inputName));
      },
      // The block sockets of a loop node: [name, label, source node id or null]
      sockets(id) {
        const node = g().getNodeById(id);
        return node.inputs.map((i, slot) => [i, slot]).filter(([i]) => /^block_\d+$/.test(i.name))
          .map(([i, slot]) => [i.name, i.label ?? i.name, node.getInputLink(slot)?.origin_id ?? null]);
      },
      // A comparable picture of the graph: nodes (type, inputs with links) and links.
      shape() {
        const w = g().serialize();
        return {
          nodes: w.nodes.map((n) => ({ id: n.id, type: n.type, inputs: (n.inputs ?? []).map((i) => [i.name, i.label ?? null, i.link]),
            widgets: n.widgets_values ?? null })).sort((a, b) => a.id - b.id),
          links: [...w.links].map((l) => (Array.isArray(l) ? l : [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]))
            .sort((a, b) => a[0] - b[0]),
        };
      },
      tracker: () => app.extensionManager.workflow.activeWorkflow.changeTracker,
      // record the graph in the undo history (`captureCanvasState` where the frontend renamed `checkState`)
      capture() {
        const t = window.ml.tracker();
        return t.captureCanvasState ? t.captureCanvasState() : t.checkState();
      },
      ext: () => app.extensions.find((e) => e.name === "ModularLoops"),
      // LoopBlock (x = 0) then a second block into a loop of `steps`, its state shown by Inspect State.
      async twoBlockLoop(secondType, secondWidgets, steps) {
        window.ml.clear();
        const add = window.ml.add;
        const first = add("ModularBlock_LoopBlock", [40, 60], { x: "0" });
        const second = add(secondType, [40, 220], secondWidgets);
        const loop = add("ModularLoop_LoopWrapper", [400, 80], { num_steps: String(steps) });
        const inspect = add("ModularStateInspect", [780, 80]);
        window.ml.connect(first, loop, "block_1"); await settle();
        window.ml.connect(second, loop, "block_2"); await settle();
        window.ml.connect(loop, inspect, "state");
        return { loop, second };
      },
      // Load a workflow, queue what the frontend would queue (graphToPrompt), return ComfyUI's answer.
      async loadAndValidate(workflow) {
        await app.loadGraphData(workflow);
        await sleep(200);
        const { output } = await app.graphToPrompt();
        const r = await fetch("/api/prompt", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ prompt: output }) });
        return { status: r.status, body: await r.json() };
      },
      // The nodes `ids` (of the root graph) made into a subgraph: {holder, inner: {type: id}} ({unsupported} on a
      // frontend without subgraphs).
      toSubgraph(ids) {
        if (typeof g().convertToSubgraph !== "function") return { unsupported: "this frontend's LGraph has no convertToSubgraph" };
        const { node } = g().convertToSubgraph(new Set(ids.map((id) => g().getNodeById(id))));
        return { holder: node.id, inner: Object.fromEntries(node.subgraph._nodes.map((n) => [n.type, n.id])) };
      },
      holder: (id) => g().getNodeById(id),
      inner: (holder, id) => g().getNodeById(holder).subgraph.getNodeById(id),
      // Show a subgraph on the canvas, or the root graph again.
      open(holder) {
        const node = g().getNodeById(holder);
        app.canvas.openSubgraph(node.subgraph, node);
      },
      closeSubgraphs() {
        if (app.canvas.graph !== g()) app.canvas.setGraph(g());
      },
      // What the canvas renderer draws from now on: "step n/N" texts and red outlines.
      spyCanvas() {
        const drawn = (window.__mlDrawn = { steps: [], outlines: 0 });
        if (window.__mlSpying) return;
        window.__mlSpying = true;
        const proto = CanvasRenderingContext2D.prototype;
        const fillText = proto.fillText, strokeRect = proto.strokeRect;
        proto.fillText = function (text) {
          if (/^step \d+\/\d+$/.test(text)) window.__mlDrawn.steps.push(text);
          return fillText.apply(this, arguments);
        };
        proto.strokeRect = function () {
          if (String(this.strokeStyle).toLowerCase() === "#ff4444") window.__mlDrawn.outlines += 1;
          return strokeRect.apply(this, arguments);
        };
        return drawn;
      },
      drawn: () => window.__mlDrawn,
      // the marks the extension put on a node (none where it puts none)
      marks: (node) => window.ml.ext().marks?.(node) ?? { step: null, failed: false },
      // Nodes 2.0: whether the element of node `id` in the graph on screen is outlined
      outlined: (id) => document.querySelector(`.lg-node[data-node-id="${id}"]`)?.hasAttribute("data-modular-loops-failed") ?? null,
      // The text a node shows in its widgets (PreviewAny: one text widget; newer hosts add a mode combo).
      previewTexts(id) {
        return (g().getNodeById(id).widgets ?? []).map((w) => String(w.value ?? "").trim());
      },
    };
  });
}

await openApp();
await installHelpers();

await scenario("load", async () => {
  const ours = consoleLines.filter((l) => ["error", "pageerror", "warning"].includes(l.type)
    && /modular_loops|ModularLoop|ModularBlock|Modular Loops/i.test(l.text));
  const ext = await page.evaluate(() => window.app.extensions.map((e) => e.name).filter((n) => n.startsWith("ModularLoops")));
  return { packConsoleErrors: ours, extensions: ext };
});

await scenario("sockets", async () => {
  return await page.evaluate(async () => {
    const { ml } = window;
    ml.clear();
    const loop = ml.add("ModularLoop_LoopWrapper", [400, 80], { num_steps: "3" });
    const a = ml.add("ModularBlock_LoopBlock", [40, 40], { x: "0" });
    const b = ml.add("ModularBlock_LoopBlock", [40, 200]);
    const c = ml.add("ModularBlock_MultiplyBlock", [40, 360]);
    ml.node(a).title = "A"; ml.node(b).title = "B"; ml.node(c).title = "C";
    await ml.settle();
    const fresh = ml.sockets(loop);
    ml.connect(a, loop, "block_1"); await ml.settle();
    ml.connect(b, loop, "block_2"); await ml.settle();
    ml.connect(c, loop, "block_3"); await ml.settle();
    const three = ml.sockets(loop);
    ml.disconnect(loop, "block_2"); await ml.settle();
    const closed = ml.sockets(loop);
    // connecting onto a used socket replaces that block, sockets stay in order
    ml.connect(b, loop, "block_1"); await ml.settle();
    const replaced = ml.sockets(loop);
    return { loop, a, b, c, fresh, three, closed, replaced };
  });
});

await scenario("save_reload_paste_undo", async () => {
  return await page.evaluate(async () => {
    const { ml, app } = window;
    ml.clear();
    const loop = ml.add("ModularLoop_LoopWrapper", [400, 80], { num_steps: "2" });
    const ids = [0, 1, 2].map((k) => ml.add("ModularBlock_LoopBlock", [40, 40 + 150 * k], { x: k === 0 ? "0" : "" }));
    for (const [k, id] of ids.entries()) { ml.connect(id, loop, `block_${k + 1}`); await ml.settle(); }
    await ml.sleep(100);
    const before = ml.shape();
    const saved = JSON.parse(JSON.stringify(ml.g().serialize()));
    await app.loadGraphData(saved);
    await ml.sleep(200);
    const reloaded = ml.shape();

    // undo: a disconnect, then undo brings the socket and link back
    const tracker = ml.tracker();
    ml.capture();
    const beforeDisconnect = ml.shape();
    ml.disconnect(loop, "block_2");
    await ml.sleep(100);
    ml.capture();
    const afterDisconnect = ml.sockets(loop);
    await tracker.undo();
    await ml.sleep(200);
    const undone = ml.shape();

    // paste: copy the loop and its blocks, paste, the copy has the same sockets and links
    app.canvas.selectItems([loop, ...ids].map((id) => ml.node(id)));
    app.canvas.copyToClipboard();
    app.canvas.pasteFromClipboard({ position: [900, 400] });
    await ml.sleep(200);
    const loops = ml.g()._nodes.filter((n) => n.type === "ModularLoop_LoopWrapper").map((n) => n.id);
    const pasted = loops.filter((id) => id !== loop)[0];
    return {
      before, reloaded, beforeDisconnect, afterDisconnect, undone,
      original: ml.sockets(loop).map((s) => [s[0], s[1]]),
      pasted: pasted != null ? ml.sockets(pasted).map((s) => [s[0], s[1]]) : null,
      pastedSources: pasted != null ? ml.sockets(pasted).map((s) => s[2]) : null, ids,
    };
  });
});

await scenario("queue_guide", async () => {
  const ids = await page.evaluate(async () => {
    const { ml } = window;
    ml.clear();
    const b1 = ml.add("ModularBlock_LoopBlock", [40, 60], { x: "0" });
    const b2 = ml.add("ModularBlock_LoopBlock", [40, 220]);
    const loop = ml.add("ModularLoop_LoopWrapper", [400, 80], { num_steps: "3" });
    const get = ml.add("ModularStateGet", [780, 80], { key: "x" });
    const show = ml.add("PreviewAny", [1080, 80]);
    ml.connect(b1, loop, "block_1"); await ml.settle();
    ml.connect(b2, loop, "block_2"); await ml.settle();
    ml.connect(loop, get, "state");
    ml.connect(get, show, "source");
    await ml.settle();
    return { loop, show };
  });
  await page.evaluate(() => window.app.queuePrompt(0));
  await page.waitForFunction((id) => window.ml.previewTexts(id).includes("6"), ids.show, { timeout: 60000 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(outDir, "guide_loop.png") });
  const api = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  const workflow = await page.evaluate(() => window.ml.g().serialize());
  fs.writeFileSync(path.join(outDir, "guide_loop_workflow.json"), JSON.stringify(workflow, null, 2));
  const shown = await page.evaluate((id) => window.ml.previewTexts(id), ids.show);
  return { preview: shown.includes("6") ? "6" : shown.join(" | "), api, ids };
});

await scenario("save_state_shows_its_file", async () => {
  // The guide's loop -> Save State: the node shows the file it wrote (not sent with the next prompt).
  const ids = await page.evaluate(async () => {
    const { ml } = window;
    ml.clear();
    const b1 = ml.add("ModularBlock_LoopBlock", [40, 60], { x: "0" });
    const loop = ml.add("ModularLoop_LoopWrapper", [400, 80], { num_steps: "2" });
    const save = ml.add("ModularStateSave", [780, 80], { filename_prefix: `states/browser_${Date.now()}` });
    ml.connect(b1, loop, "block_1"); await ml.settle();
    ml.connect(loop, save, "state");
    await ml.settle();
    return { save };
  });
  await page.evaluate(() => window.app.queuePrompt(0));
  const shown = (id) => (window.ml.node(id).widgets ?? []).find((w) => w.name === "saved")?.value;
  await page.waitForFunction(shown, ids.save, { timeout: 60000 });
  return {
    shown: await page.evaluate(shown, ids.save),
    sent: await page.evaluate(async (id) => (await window.app.graphToPrompt()).output[String(id)].inputs, ids.save),
  };
});

await scenario("progress_and_interrupt", async () => {
  const ids = await page.evaluate(() => window.ml.twoBlockLoop("ModularBlock_SleepBlock", { seconds: 0.2 }, 200));
  await page.evaluate(() => {
    window.__mlInterrupted = false;
    window.app.api.addEventListener("execution_interrupted", () => { window.__mlInterrupted = true; });
  });
  await page.evaluate(() => window.app.queuePrompt(0));
  await page.waitForFunction((id) => (window.ml.ext().step(id)?.[0] ?? 0) >= 2, ids.loop, { timeout: 60000 });
  const seen = await page.evaluate((id) => window.ml.ext().step(id), ids.loop);
  // What the page shows: the canvas renderer draws "step n/N" on the node; Nodes 2.0 shows the frontend's own
  // progress bar inside the node's element.
  const shown = await page.evaluate((id) => {
    if (!window.ml.nodes2()) return window.ml.ext().step(id) ? "canvas step text" : null;
    const bar = [...document.querySelectorAll(`[data-node-id="${id}"] div`)].find((d) => /%$/.test(d.style.width));
    return bar ? `progress bar ${bar.style.width}` : null;
  }, ids.loop);
  await page.screenshot({ path: path.join(outDir, "progress.png") });
  const t0 = Date.now();
  await page.evaluate(() => window.app.api.interrupt()); // what the Interrupt button calls
  await page.waitForFunction(() => window.__mlInterrupted, null, { timeout: 30000 });
  const stoppedMs = Date.now() - t0;
  return { seen, shown, stoppedMs, after: await page.evaluate((id) => window.ml.ext().step(id) ?? null, ids.loop) };
});

await scenario("error_marks_block", async () => {
  const { loop, second } = await page.evaluate(() => window.ml.twoBlockLoop("ModularBlock_FailAtStepBlock", { fail_at: 1 }, 3));
  const ids = { loop, bad: second };
  const errors = [];
  await page.exposeFunction("__mlSawError", (d) => errors.push(d));
  await page.evaluate(() => window.app.api.addEventListener("execution_error", ({ detail }) => window.__mlSawError(detail)));
  await page.evaluate(() => window.app.queuePrompt(0));
  await page.waitForFunction(() => window.ml.ext().failedBlock() != null, null, { timeout: 60000 });
  await page.waitForTimeout(500);
  await page.keyboard.press("Escape");
  await page.screenshot({ path: path.join(outDir, "error_marks_block.png") });
  const failed = await page.evaluate(() => window.ml.ext().failedBlock());
  // Nodes 2.0: the block node's element is outlined (the canvas renderer draws the outline itself)
  const domMarked = await page.evaluate((id) => (window.ml.nodes2()
    ? document.querySelector(`.lg-node[data-node-id="${id}"]`)?.hasAttribute("data-modular-loops-failed") ?? false
    : null), ids.bad);
  // the next run clears the mark
  await page.evaluate(() => window.ml.node(window.ml.g()._nodes.find((n) => n.type === "ModularBlock_FailAtStepBlock").id)
    .widgets.find((w) => w.name === "fail_at").value = 99);
  await page.evaluate(() => window.app.queuePrompt(0));
  await page.waitForFunction(() => window.ml.ext().failedBlock() == null, null, { timeout: 60000 });
  await page.waitForTimeout(300);
  const cleared = await page.evaluate((id) => !document.querySelector(`[data-modular-loops-failed]`), ids.bad);
  return { failed, ids, message: errors[0]?.exception_message, errorNode: errors[0]?.node_id, domMarked, cleared };
});

// Subgraphs: the server names a node inside one by its path of ids ("holder:inner"); the loop's step and the
// failed block's outline go on the inner node (seen once the subgraph is opened) and on the subgraph node.
await scenario("subgraph_progress", async () => {
  const made = await page.evaluate(async () => {
    const { ml } = window;
    const { loop, second } = await ml.twoBlockLoop("ModularBlock_SleepBlock", { seconds: 0.15 }, 60);
    const inspect = ml.g()._nodes.find((n) => n.type === "ModularStateInspect").id;
    const first = ml.g()._nodes.find((n) => n.type === "ModularBlock_LoopBlock").id;
    return ml.toSubgraph([first, second, loop, inspect]);
  });
  if (made.unsupported) return made;
  const holder = made.holder, loop = made.inner.ModularLoop_LoopWrapper;
  const execId = `${holder}:${loop}`;
  try {
    await page.evaluate(() => {
      window.__mlInterrupted = false;
      window.app.api.addEventListener("execution_interrupted", () => { window.__mlInterrupted = true; });
    });
    const prompt = await page.evaluate(async () => Object.keys((await window.app.graphToPrompt()).output));
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction((id) => (window.ml.ext().step(id)?.[0] ?? 0) >= 2, execId, { timeout: 60000 });
    await page.evaluate(() => window.ml.spyCanvas());
    await page.waitForTimeout(400);
    const atRoot = await page.evaluate(({ holder, loop }) => ({
      seen: window.ml.ext().step(`${holder}:${loop}`),
      holder: window.ml.marks(window.ml.holder(holder)),
      inner: window.ml.marks(window.ml.inner(holder, loop)),
      drawn: [...window.ml.drawn().steps],
    }), { holder, loop });
    await page.screenshot({ path: path.join(outDir, "subgraph_progress_root.png") });
    await page.evaluate((holder) => { window.ml.open(holder); window.ml.spyCanvas(); }, holder);
    await page.waitForTimeout(600);
    const inside = await page.evaluate((loop) => {
      const bar = [...document.querySelectorAll(`[data-node-id="${loop}"] div`)].find((d) => /%$/.test(d.style.width));
      return { drawn: [...window.ml.drawn().steps], bar: bar ? bar.style.width : null };
    }, loop);
    await page.screenshot({ path: path.join(outDir, "subgraph_progress_inside.png") });
    await page.evaluate(() => window.app.api.interrupt());
    await page.waitForFunction(() => window.__mlInterrupted, null, { timeout: 30000 });
    await page.waitForTimeout(200);
    const after = await page.evaluate(({ holder, loop }) => ({
      step: window.ml.ext().step(`${holder}:${loop}`) ?? null,
      holder: window.ml.marks(window.ml.holder(holder)),
      inner: window.ml.marks(window.ml.inner(holder, loop)),
    }), { holder, loop });
    return { holder, loop, execId, prompt, atRoot, inside, after };
  } finally {
    await page.evaluate(() => window.ml.closeSubgraphs());
  }
});

await scenario("subgraph_error", async () => {
  const errors = [];
  await page.exposeFunction("__mlSawSubgraphError", (d) => errors.push(d));
  await page.evaluate(() => window.app.api.addEventListener("execution_error", ({ detail }) => window.__mlSawSubgraphError(detail)));
  const made = await page.evaluate(async () => {
    const { ml } = window;
    const { loop, second } = await ml.twoBlockLoop("ModularBlock_FailAtStepBlock", { fail_at: 1 }, 3);
    const inspect = ml.g()._nodes.find((n) => n.type === "ModularStateInspect").id;
    const first = ml.g()._nodes.find((n) => n.type === "ModularBlock_LoopBlock").id;
    return ml.toSubgraph([first, second, loop, inspect]);
  });
  if (made.unsupported) return made;
  const holder = made.holder, bad = made.inner.ModularBlock_FailAtStepBlock, loop = made.inner.ModularLoop_LoopWrapper;
  try {
    await page.evaluate(() => window.ml.spyCanvas());
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction(() => window.ml.ext().failedBlock() != null, null, { timeout: 60000 });
    await page.waitForTimeout(500);
    await page.keyboard.press("Escape");
    await page.waitForTimeout(200);
    const marks = (ids) => page.evaluate(({ holder, bad, loop }) => ({
      failed: window.ml.ext().failedBlock(),
      holder: window.ml.marks(window.ml.holder(holder)),
      bad: window.ml.marks(window.ml.inner(holder, bad)),
      loop: window.ml.marks(window.ml.inner(holder, loop)),
    }), ids);
    const ids = { holder, bad, loop };
    const atRoot = { ...(await marks(ids)), outlines: await page.evaluate(() => window.ml.drawn().outlines),
      elements: await page.evaluate(({ holder, bad }) => window.ml.nodes2() ? { holder: window.ml.outlined(holder), bad: window.ml.outlined(bad) } : null, ids) };
    await page.screenshot({ path: path.join(outDir, "subgraph_error_root.png") });
    await page.evaluate((holder) => { window.ml.open(holder); window.ml.spyCanvas(); }, holder);
    await page.waitForTimeout(600);
    const inside = { outlines: await page.evaluate(() => window.ml.drawn().outlines),
      elements: await page.evaluate(({ bad, loop }) => window.ml.nodes2() ? { bad: window.ml.outlined(bad), loop: window.ml.outlined(loop) } : null, ids) };
    await page.screenshot({ path: path.join(outDir, "subgraph_error_inside.png") });
    // the next run clears the marks
    await page.evaluate(({ holder, bad }) => { window.ml.inner(holder, bad).widgets.find((w) => w.name === "fail_at").value = 99; }, ids);
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction(() => window.ml.ext().failedBlock() == null, null, { timeout: 60000 });
    await page.waitForTimeout(300);
    const cleared = { ...(await marks(ids)), elements: await page.evaluate(() => document.querySelectorAll("[data-modular-loops-failed]").length) };
    return { ...ids, atRoot, inside, cleared, message: errors[0]?.exception_message, errorNode: errors[0]?.node_id };
  } finally {
    await page.evaluate(() => window.ml.closeSubgraphs());
  }
});

await scenario("templates_validate", async () => {
  return await page.evaluate(async () => {
    const res = await fetch("/api/workflow_templates");
    const names = (await res.json()).modular_loops ?? [];
    const out = {};
    for (const name of names) {
      const wf = await (await fetch(`/api/workflow_templates/modular_loops/${name}.json`)).json();
      out[name] = await window.ml.loadAndValidate(wf);
    }
    return { names, out };
  });
});

await scenario("saved_workflows_load", async () => {
  // Workflows saved by earlier versions of the pack (tests/fixtures/workflows/) still load and validate.
  const dir = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "fixtures", "workflows");
  const out = {};
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
    const wf = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8"));
    out[file] = await page.evaluate(async (wf) => {
      const answer = await window.ml.loadAndValidate(wf);
      const loops = window.ml.g()._nodes.filter((n) => n.type.startsWith("ModularLoop_"));
      return { ...answer, sockets: loops.map((n) => window.ml.sockets(n.id).map((s) => s[0])) };
    }, wf);
  }
  return { out };
});

await scenario("missing_block", async () => {
  const warned = [];
  const onConsole = (m) => { if (m.text().includes("[Modular Loops]")) warned.push(m.text()); };
  page.on("console", onConsole);
  await page.evaluate(async () => {
    const wf = {
      last_node_id: 2, last_link_id: 0, nodes: [
        { id: 1, type: "ModularBlock_NotInstalledBlock", pos: [40, 40], size: [270, 60], flags: {}, order: 0, mode: 0,
          inputs: [], outputs: [{ name: "block", type: "LOOP_BLOCK", links: null }],
          properties: { "Modular Loops block": { origin: "user", source: "my_blocks.py" } }, widgets_values: ["1"] },
        { id: 2, type: "ModularLoop_GoneLoop", pos: [400, 40], size: [270, 60], flags: {}, order: 1, mode: 0,
          inputs: [], outputs: [], properties: {}, widgets_values: [] },
      ], links: [], groups: [], config: {}, extra: {}, version: 0.4,
    };
    await window.app.loadGraphData(wf);
  });
  await page.waitForTimeout(800);
  await page.screenshot({ path: path.join(outDir, "missing_block.png") });
  const toast = await page.getByText("Modular Loops: missing blocks").allInnerTexts().catch(() => []);
  page.off("console", onConsole);
  await page.keyboard.press("Escape");
  return { warned, toast };
});

await scenario("missing_diffusers_node", async () => {
  // A diffusers node records the diffusers it was made with; one this server's diffusers lacks is named with that
  // release (and a diffusers custom-block folder is named as a folder).
  const warned = [];
  const onConsole = (m) => { if (m.text().includes("[Modular Loops]")) warned.push(m.text()); };
  const recorded = await page.evaluate(async () => {
    const info = await (await fetch("/modular_loops/blocks")).json();
    const [type, origin] = Object.entries(info.nodes).find(([t, o]) => o.origin === "diffusers" && t.startsWith("ModularStep_")) ?? [];
    window.ml.clear();
    const id = type ? window.ml.add(type, [40, 40]) : null;
    const saved = (nid) => window.ml.g().serialize().nodes.find((n) => String(n.id) === String(nid)).properties["Modular Loops block"] ?? null;
    // a workflow node (every template is one) records its origin too
    const [wtype, worigin] = Object.entries(info.nodes).find(([t, o]) => o.origin === "diffusers" && t.startsWith("ModularWorkflow_")) ?? [];
    const wid = wtype ? window.ml.add(wtype, [40, 300]) : null;
    return { type, served: origin ?? null, version: info.diffusers_version ?? null, saved: id != null ? saved(id) : null,
      workflow: { type: wtype, served: worigin ?? null, saved: wid != null ? saved(wid) : null } };
  });
  page.on("console", onConsole);
  await page.evaluate(async () => {
    const node = (id, type, origin) => ({ id, type, pos: [40, 40 + 120 * id], size: [270, 60], flags: {}, order: id, mode: 0,
      inputs: [], outputs: [], properties: { "Modular Loops block": origin }, widgets_values: [] });
    const wf = {
      last_node_id: 4, last_link_id: 0, nodes: [
        node(1, "ModularStep_NoSuchDiffusersStep", { origin: "diffusers",
          source: "diffusers/modular_pipelines/stable_diffusion_xl/encoders.py", diffusers_version: "0.42.1" }),
        node(2, "ModularLoop_NoSuchDiffusersLoop", { origin: "diffusers", source: "diffusers/modular_pipelines/flux/denoise.py" }),
        node(3, "ModularBlock_NoSuchCustomBlock", { origin: "custom", source: "my_custom_block" }),
        node(4, "ModularWorkflow_NoSuchAutoBlocks", { origin: "diffusers",
          source: "diffusers/modular_pipelines/flux/modular_blocks_flux.py", diffusers_version: "0.42.1" }),
      ], links: [], groups: [], config: {}, extra: {}, version: 0.4,
    };
    await window.app.loadGraphData(wf);
  });
  await page.waitForTimeout(800);
  await page.screenshot({ path: path.join(outDir, "missing_diffusers_node.png") });
  const toast = await page.getByText("Modular Loops: missing blocks").allInnerTexts().catch(() => []);
  page.off("console", onConsole);
  await page.keyboard.press("Escape");
  return { recorded, warned, toast };
});

await scenario("workflow_template_fits", async () => {
  // The SDXL text2image template as a user opens it: its workflow node fits one 1000 px high screen at the default
  // zoom (the common values and the media the workflow reads; the rest in `more`), switching the workflow shows the
  // sockets that workflow reads, and, on the tiny folder, it queues to diffusers' own pipe() picture.
  const here = path.dirname(new URL(import.meta.url).pathname);
  const template = JSON.parse(fs.readFileSync(path.join(here, "..", "..", "example_workflows",
    "diffusers_stable_diffusion_xl_text2image.json"), "utf8"));
  await page.evaluate(async (wf) => {
    await window.app.loadGraphData(wf);
    const ds = window.app.canvas.ds;
    ds.scale = 1;
    ds.offset = [40, 40];
    window.app.canvas.setDirty(true, true);
  }, template);
  await page.waitForTimeout(600);
  await page.screenshot({ path: path.join(outDir, "workflow_template.png") });
  const measured = await page.evaluate(() => {
    const { ml } = window;
    const node = ml.g().nodes.find((n) => n.type.startsWith("ModularWorkflow_"));
    const element = document.querySelector(`[data-node-id="${node.id}"]`);
    const scale = window.app.canvas.ds.scale;
    const content = Math.max(node.size[1], node.computeSize?.()[1] ?? 0); // what its widgets and sockets need
    return { id: node.id, canvasHeight: content + (window.LiteGraph.NODE_TITLE_HEIGHT ?? 30),
      domHeight: element ? element.getBoundingClientRect().height / scale : null,
      inputs: node.inputs.map((i) => i.name), widgets: node.widgets.map((w) => w.name) };
  });
  const choose = async (workflow) => {
    await page.evaluate(({ id, workflow }) => {
      const widget = window.ml.node(id).widgets.find((w) => w.name === "workflow");
      widget.value = workflow;
      widget.callback?.(workflow);
    }, { id: measured.id, workflow });
    await page.waitForTimeout(300);
    return page.evaluate((id) => window.ml.node(id).inputs.map((i) => i.name), measured.id);
  };
  const inpainting = await choose("inpainting");
  const text2image = await choose("text2image");
  const call = { prompt: "a cat", num_inference_steps: 2, height: 32, width: 32 };
  const show = await page.evaluate(async ({ id, call }) => {
    const { ml } = window;
    const flow = ml.node(id);
    // the call's values (the template's negative prompt cleared: the reference call has none), its seed kept fixed
    const values = { ...call, negative_prompt: "", generator: 0, control_after_generate: "fixed", output_type: "pt" };
    for (const [k, v] of Object.entries(values)) flow.widgets.find((w) => w.name === k).value = v;
    const loader = ml.g().nodes.find((n) => n.type === "ModularDiffusersLoader");
    loader.widgets.find((w) => w.name === "folder").value = "tiny-sdxl";
    loader.widgets.find((w) => w.name === "dtype").value = "float32";
    const image = ml.g().nodes.find((n) => n.type === "ModularStateToImage");
    const ref = ml.add("MLTest_DiffusersCall", [900, 500], { folder: "tiny-sdxl", call: JSON.stringify(call), output: "images", seed: 0 });
    const control = ml.node(ref).widgets.find((w) => w.name === "control_after_generate");
    if (control) control.value = "fixed";
    const diff = ml.add("MLTest_ImageDiff", [1200, 500]);
    const shown = ml.add("PreviewAny", [1200, 700]);
    ml.connect(image.id, diff, "a");
    ml.connect(ref, diff, "b");
    ml.connect(diff, shown, "source");
    await ml.settle();
    return shown;
  }, { id: measured.id, call });
  await page.evaluate(() => window.app.queuePrompt(0));
  await page.waitForFunction((id) => window.ml.previewTexts(id).some((t) => t.includes("max_abs_diff")), show, { timeout: 120000 });
  const queued = JSON.parse(await page.evaluate((id) => window.ml.previewTexts(id).find((t) => t.includes("max_abs_diff")), show));
  return { measured, inpainting, text2image, queued };
});

await scenario("expand_workflow", async () => {
  // SDXL's workflow node on the tiny folder, its picture compared with diffusers' own pipe() (testkit); then
  // "Expand into steps" and queue again: the chain of step and loop nodes gives the same picture.
  const call = { prompt: "a cat", num_inference_steps: 2, height: 32, width: 32 };
  const ids = await page.evaluate(async (call) => {
    const { ml } = window;
    ml.clear();
    const pipe = ml.add("ModularDiffusersLoader", [20, 60], { folder: "tiny-sdxl", dtype: "float32" });
    const flow = ml.add("ModularWorkflow_StableDiffusionXLAutoBlocks", [320, 60],
      { workflow: "text2image", ...call, generator: 0, control_after_generate: "fixed", output_type: "pt" });
    const image = ml.add("ModularStateToImage", [700, 60]);
    const ref = ml.add("MLTest_DiffusersCall", [700, 260], { folder: "tiny-sdxl", call: JSON.stringify(call), output: "images", seed: 0 });
    const control = ml.node(ref).widgets.find((w) => w.name === "control_after_generate"); // a "seed" widget's
    if (control) control.value = "fixed";
    const diff = ml.add("MLTest_ImageDiff", [1000, 60]);
    const show = ml.add("PreviewAny", [1000, 260]);
    ml.connect(pipe, flow, "pipeline");
    ml.connect(flow, image, "state");
    ml.connect(image, diff, "a");
    ml.connect(ref, diff, "b");
    ml.connect(diff, show, "source");
    await ml.settle();
    return { flow, image, show };
  }, call);
  const diffOf = async () => {
    await page.evaluate((id) => { for (const w of window.ml.node(id).widgets ?? []) w.value = ""; }, ids.show);
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction((id) => window.ml.previewTexts(id).some((t) => t.includes("max_abs_diff")), ids.show, { timeout: 120000 });
    return JSON.parse(await page.evaluate((id) => window.ml.previewTexts(id).find((t) => t.includes("max_abs_diff")), ids.show));
  };
  const one = await diffOf();
  const chain = await page.evaluate(async (id) => {
    const made = await window.ml.ext().expandWorkflow(window.ml.node(id));
    await window.ml.settle();
    return made.map((n) => ({ type: n.type, id: n.id, prompt: n.widgets?.find((w) => w.name === "prompt")?.value ?? null }));
  }, ids.flow);
  const after = await page.evaluate(({ ids, last }) => {
    const image = window.ml.node(ids.image), end = window.ml.node(last);
    return {
      workflowNodeLeft: !!window.ml.node(ids.flow),
      imageFedBy: image.getInputLink(0)?.origin_id ?? null,
      imageRightOfChain: image.pos[0] >= end.pos[0] + end.size[0], // moved right, not covered by the chain
    };
  }, { ids, last: chain.at(-1).id });
  await page.evaluate(() => {  // the whole chain in view, the earlier scenarios' messages closed
    window.app.extensionManager?.toast?.removeAll?.();
    document.querySelectorAll(".p-toast-close-button, .p-toast-icon-close").forEach((b) => b.click());
    const ds = window.app.canvas.ds;
    ds.scale = 0.42;
    ds.offset = [20, 120];
    window.app.canvas.setDirty(true, true);
  });
  await page.waitForTimeout(400);
  await page.screenshot({ path: path.join(outDir, "expanded_workflow.png") });
  const expanded = await diffOf();
  const api = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  return { one, expanded, chain, after, api };
});

await scenario("final_console", async () => {
  const ours = consoleLines.filter((l) => ["error", "pageerror"].includes(l.type)
    && /modular_loops|ModularLoop|ModularBlock|Modular Loops/i.test(l.text));
  const deprecations = await page.evaluate(() => window.__mlDeprecations);
  return { packConsoleErrors: ours, deprecations, nodes2: await page.evaluate(() => window.ml.nodes2()) };
});

await browser.close();
console.log(JSON.stringify(results));
