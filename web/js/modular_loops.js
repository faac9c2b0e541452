// Modular Loops: tell loop nodes and block nodes apart at a glance.
// This file is served at /extensions/<pack folder>/js/, three levels below the app root.
import { app } from "../../../scripts/app.js";

const LOOP_COLOR = { color: "#2a4a6a", bgcolor: "#355a7f" };
const BLOCK_COLOR = { color: "#3a5a3a", bgcolor: "#4a6f4a" };

app.registerExtension({
  name: "ModularLoops.Colors",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const style = nodeData.name?.startsWith("ModularLoop_") ? LOOP_COLOR
      : nodeData.name?.startsWith("ModularBlock_") ? BLOCK_COLOR : null;
    if (!style) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (!this.color) Object.assign(this, style);
      return r;
    };
  },
});
