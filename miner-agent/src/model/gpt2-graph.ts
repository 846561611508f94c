// GPT-2 decoder with KV cache as an ONNX graph, laid out the way transformers.js drives a
// decoder-only model: inputs input_ids, attention_mask, position_ids, past_key_values.{i}.key/value
// ([batch, n_head, past_len, head_dim]); outputs logits and present.{i}.key/value.
import { DataType, type ModelDef, type NodeDef, type TensorInit, type ValueInfo } from "./onnx-proto.ts";

export interface Gpt2Config {
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  layer_norm_epsilon: number;
}

export interface Gpt2Layer {
  ln1_g: Float32Array;
  ln1_b: Float32Array;
  attn_w: Float32Array;
  attn_b: Float32Array; // [E, 3E], [3E]: fused q|k|v projection
  proj_w: Float32Array;
  proj_b: Float32Array; // [E, E]
  ln2_g: Float32Array;
  ln2_b: Float32Array;
  fc_w: Float32Array;
  fc_b: Float32Array; // [E, 4E]
  out_w: Float32Array;
  out_b: Float32Array; // [4E, E]
}

export interface Gpt2Weights {
  wte: Float32Array; // [V, E], also the (tied) LM head
  wpe: Float32Array; // [n_positions, E]
  layers: Gpt2Layer[];
  lnf_g: Float32Array;
  lnf_b: Float32Array;
}

export const OPSET = 20; // Gelu(approximate="tanh") is a standard op from opset 20
export const IR_VERSION = 9; // the IR version that goes with opsets 19–20

export function f32(name: string, dims: number[], data: Float32Array): TensorInit {
  return { name, dataType: DataType.FLOAT, dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function i64(name: string, values: number[]): TensorInit {
  const data = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { name, dataType: DataType.INT64, dims: [values.length], raw: new Uint8Array(data.buffer) };
}

export function scalarF32(name: string, v: number): TensorInit {
  return { name, dataType: DataType.FLOAT, dims: [], raw: new Uint8Array(Float32Array.of(v).buffer) };
}

/** Node list plus builders naming each node `<op>_<n>` in creation order (names are part of the model bytes). */
export function graphNodes() {
  const nodes: NodeDef[] = [];
  let seq = 0;
  const node = (opType: string, inputs: string[], attrs?: NodeDef["attrs"], nOut = 1): string[] => {
    const id = `${opType}_${seq++}`;
    const outputs = Array.from({ length: nOut }, (_, i) => (nOut === 1 ? id : `${id}_${i}`));
    nodes.push({ opType, inputs, outputs, name: id, attrs });
    return outputs;
  };
  const op = (opType: string, inputs: string[], attrs?: NodeDef["attrs"]): string => node(opType, inputs, attrs)[0];
  const named = (opType: string, inputs: string[], output: string, attrs?: NodeDef["attrs"]): string => {
    nodes.push({ opType, inputs, outputs: [output], name: `${opType}_${seq++}`, attrs });
    return output;
  };
  return { nodes, node, op, named };
}

export function buildGpt2Graph(cfg: Gpt2Config, w: Gpt2Weights): ModelDef {
  const E = cfg.n_embd,
    H = cfg.n_head,
    D = E / H,
    L = cfg.n_layer;
  if (!Number.isInteger(D)) throw new Error("n_embd must be divisible by n_head");
  const g = graphNodes();
  const { nodes, op, named } = g;
  const inits: TensorInit[] = [];

  // Shared constants.
  inits.push(
    i64("c_0", [0]),
    i64("c_1", [1]),
    i64("c_heads", [0, 0, H, D]),
    i64("c_merge", [0, 0, E]),
    i64("c_split3", [E, E, E]),
    i64("c_axes12", [1, 2]),
    scalarF32("c_scale", 1 / Math.sqrt(D)),
    scalarF32("c_zero", 0),
    scalarF32("c_neg", -1e9),
    { name: "c_0s", dataType: DataType.INT64, dims: [], raw: new Uint8Array(new BigInt64Array([0n]).buffer) },
    { name: "c_1s", dataType: DataType.INT64, dims: [], raw: new Uint8Array(new BigInt64Array([1n]).buffer) },
  );

  // Embeddings: token + learned absolute position (GPT-2 style).
  inits.push(f32("wte", [cfg.vocab_size, E], w.wte), f32("wpe", [cfg.n_positions, E], w.wpe));
  let h = op("Add", [op("Gather", ["wte", "input_ids"]), op("Gather", ["wpe", "position_ids"])]);

  // Additive attention bias [B, 1, S, T]: key j is visible to query i iff j <= past_len + i
  // (causal, counting the cached prefix) and attention_mask[b, j] == 1 (left padding).
  const sLen = op("Gather", [op("Shape", ["input_ids"]), "c_1s"], { axis: { kind: "int", v: 0 } });
  const tLen = op("Gather", [op("Shape", ["attention_mask"]), "c_1s"], { axis: { kind: "int", v: 0 } });
  const pastLen = op("Sub", [tLen, sLen]);
  const qPos = op("Unsqueeze", [op("Add", [op("Range", ["c_0s", sLen, "c_1s"]), pastLen]), "c_1"]); // [S, 1]
  const kPos = op("Unsqueeze", [op("Range", ["c_0s", tLen, "c_1s"]), "c_0"]); // [1, T]
  const causal = op("LessOrEqual", [kPos, qPos]); // [S, T]
  const padOk = op("Unsqueeze", [op("Cast", ["attention_mask"], { to: { kind: "int", v: DataType.BOOL } }), "c_axes12"]); // [B,1,1,T]
  const bias = op("Where", [op("And", [causal, padOk]), "c_zero", "c_neg"]); // [B,1,S,T]

  const eps = { kind: "float", v: cfg.layer_norm_epsilon } as const;
  for (let l = 0; l < L; l++) h = gpt2Block(g, inits, { E, eps }, l, w.layers[l], h, bias);

  inits.push(f32("ln_f.weight", [E], w.lnf_g), f32("ln_f.bias", [E], w.lnf_b));
  const hf = op("LayerNormalization", [h, "ln_f.weight", "ln_f.bias"], { axis: { kind: "int", v: -1 }, epsilon: eps });
  // Tied LM head: logits = ln_f(h) · wteᵀ (ORT constant-folds the transpose at load time).
  named("MatMul", [hf, op("Transpose", ["wte"], { perm: { kind: "ints", v: [1, 0] } })], "logits");

  const { inputs, outputs } = gpt2Io(cfg);
  return {
    irVersion: IR_VERSION,
    opset: OPSET,
    producer: "edge-inference-network",
    graphName: "gpt2",
    nodes,
    initializers: inits,
    inputs,
    outputs,
  };
}

type GraphNodes = ReturnType<typeof graphNodes>;

/** One transformer block (attention, then MLP, each with a residual): its weights, then its nodes. */
function gpt2Block(
  g: GraphNodes,
  inits: TensorInit[],
  dims: { E: number; eps: { readonly kind: "float"; readonly v: number } },
  l: number,
  lw: Gpt2Layer,
  h: string,
  bias: string,
): string {
  const { node, op, named } = g;
  const { E, eps } = dims;
  const toHeads = (x: string): string => op("Transpose", [op("Reshape", [x, "c_heads"])], { perm: { kind: "ints", v: [0, 2, 1, 3] } });
  const p = `h.${l}.`;
  inits.push(
    f32(p + "ln_1.weight", [E], lw.ln1_g),
    f32(p + "ln_1.bias", [E], lw.ln1_b),
    f32(p + "attn.c_attn.weight", [E, 3 * E], lw.attn_w),
    f32(p + "attn.c_attn.bias", [3 * E], lw.attn_b),
    f32(p + "attn.c_proj.weight", [E, E], lw.proj_w),
    f32(p + "attn.c_proj.bias", [E], lw.proj_b),
    f32(p + "ln_2.weight", [E], lw.ln2_g),
    f32(p + "ln_2.bias", [E], lw.ln2_b),
    f32(p + "mlp.c_fc.weight", [E, 4 * E], lw.fc_w),
    f32(p + "mlp.c_fc.bias", [4 * E], lw.fc_b),
    f32(p + "mlp.c_proj.weight", [4 * E, E], lw.out_w),
    f32(p + "mlp.c_proj.bias", [E], lw.out_b),
  );

  // Attention block.
  const x = op("LayerNormalization", [h, p + "ln_1.weight", p + "ln_1.bias"], { axis: { kind: "int", v: -1 }, epsilon: eps });
  const qkv = op("Add", [op("MatMul", [x, p + "attn.c_attn.weight"]), p + "attn.c_attn.bias"]);
  const [q, k, v] = node("Split", [qkv, "c_split3"], { axis: { kind: "int", v: -1 } }, 3);
  const kAll = named("Concat", [`past_key_values.${l}.key`, toHeads(k)], `present.${l}.key`, { axis: { kind: "int", v: 2 } });
  const vAll = named("Concat", [`past_key_values.${l}.value`, toHeads(v)], `present.${l}.value`, { axis: { kind: "int", v: 2 } });
  const qh = op("Mul", [toHeads(q), "c_scale"]);
  const kT = op("Transpose", [kAll], { perm: { kind: "ints", v: [0, 1, 3, 2] } });
  const scores = op("Add", [op("MatMul", [qh, kT]), bias]); // [B,H,S,T]
  const probs = op("Softmax", [scores], { axis: { kind: "int", v: -1 } });
  const ctx = op("Transpose", [op("MatMul", [probs, vAll])], { perm: { kind: "ints", v: [0, 2, 1, 3] } });
  const merged = op("Reshape", [ctx, "c_merge"]);
  const attnOut = op("Add", [op("MatMul", [merged, p + "attn.c_proj.weight"]), p + "attn.c_proj.bias"]);
  const h1 = op("Add", [h, attnOut]);

  // MLP block.
  const x2 = op("LayerNormalization", [h1, p + "ln_2.weight", p + "ln_2.bias"], { axis: { kind: "int", v: -1 }, epsilon: eps });
  const fc = op("Add", [op("MatMul", [x2, p + "mlp.c_fc.weight"]), p + "mlp.c_fc.bias"]);
  const act = op("Gelu", [fc], { approximate: { kind: "string", v: "tanh" } });
  const mlpOut = op("Add", [op("MatMul", [act, p + "mlp.c_proj.weight"]), p + "mlp.c_proj.bias"]);
  return op("Add", [h1, mlpOut]);
}

/** The graph's inputs and outputs, in the order and with the dimension names transformers.js expects. */
function gpt2Io(cfg: Gpt2Config): { inputs: ValueInfo[]; outputs: ValueInfo[] } {
  const H = cfg.n_head,
    D = cfg.n_embd / cfg.n_head;
  const inputs: ValueInfo[] = [
    { name: "input_ids", elemType: DataType.INT64, shape: ["batch_size", "sequence_length"] },
    { name: "attention_mask", elemType: DataType.INT64, shape: ["batch_size", "total_sequence_length"] },
    { name: "position_ids", elemType: DataType.INT64, shape: ["batch_size", "sequence_length"] },
  ];
  const outputs: ValueInfo[] = [{ name: "logits", elemType: DataType.FLOAT, shape: ["batch_size", "sequence_length", cfg.vocab_size] }];
  for (let l = 0; l < cfg.n_layer; l++) {
    for (const kind of ["key", "value"]) {
      // "batch_size" must be spelled exactly so: transformers.js sizes the empty first-step cache from it.
      inputs.push({ name: `past_key_values.${l}.${kind}`, elemType: DataType.FLOAT, shape: ["batch_size", H, "past_sequence_length", D] });
      outputs.push({ name: `present.${l}.${kind}`, elemType: DataType.FLOAT, shape: ["batch_size", H, "total_sequence_length", D] });
    }
  }
  return { inputs, outputs };
}
