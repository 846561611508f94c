// A small transformer encoder as an ONNX graph, laid out the way transformers.js drives an encoder-only
// (BERT-family) model for feature extraction: inputs input_ids and attention_mask [batch, seq]; output
// last_hidden_state [batch, seq, hidden]. Pre-LN blocks with no final LayerNorm, so the residual stream keeps
// each token's embedding norm (its weight in the mean-pooled sentence vector). With no blocks and no position
// table it is a token-vector lookup: the pipeline's mean pooling then gives a static sentence embedding.

import { f32, graphNodes, IR_VERSION, i64, OPSET, scalarF32 } from "./gpt2-graph.ts";
import { DataType, type ModelDef, type TensorInit, type ValueInfo } from "./onnx-proto.ts";

export interface EncoderConfig {
  vocab_size: number;
  max_position_embeddings: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  layer_norm_eps: number;
}

export interface EncoderLayer {
  ln1_g: Float32Array;
  ln1_b: Float32Array;
  qkv_w: Float32Array;
  qkv_b: Float32Array; // [E, 3E], [3E]
  proj_w: Float32Array;
  proj_b: Float32Array; // [E, E]
  ln2_g: Float32Array;
  ln2_b: Float32Array;
  fc_w: Float32Array;
  fc_b: Float32Array; // [E, I]
  out_w: Float32Array;
  out_b: Float32Array; // [I, E]
}

export interface EncoderWeights {
  word: Float32Array; // [V, E]
  /** [P, E]; none: the output does not depend on word order. */
  position?: Float32Array;
  layers: EncoderLayer[];
}

export function buildEncoderGraph(cfg: EncoderConfig, w: EncoderWeights): ModelDef {
  const E = cfg.hidden_size,
    H = cfg.num_attention_heads,
    D = E / H,
    I = cfg.intermediate_size;
  if (!Number.isInteger(D)) throw new Error("hidden_size must be divisible by num_attention_heads");
  const { nodes, node, op, named } = graphNodes();
  const inits: TensorInit[] = [];

  inits.push(
    i64("c_0", [0]),
    i64("c_axes12", [1, 2]),
    i64("c_heads", [0, 0, H, D]),
    i64("c_merge", [0, 0, E]),
    i64("c_split3", [E, E, E]),
    scalarF32("c_scale", 1 / Math.sqrt(D)),
    scalarF32("c_zero", 0),
    scalarF32("c_neg", -1e9),
    { name: "c_0s", dataType: DataType.INT64, dims: [], raw: new Uint8Array(new BigInt64Array([0n]).buffer) },
    { name: "c_1s", dataType: DataType.INT64, dims: [], raw: new Uint8Array(new BigInt64Array([1n]).buffer) },
  );
  inits.push(f32("embeddings.word_embeddings.weight", [cfg.vocab_size, E], w.word));
  let h = op("Gather", ["embeddings.word_embeddings.weight", "input_ids"]);
  if (w.position) {
    inits.push(f32("embeddings.position_embeddings.weight", [cfg.max_position_embeddings, E], w.position));
    // Positions 0..S-1 (right padding, as tokenizers pad for encoders).
    const sLen = op("Gather", [op("Shape", ["input_ids"]), "c_1s"], { axis: { kind: "int", v: 0 } });
    const positions = op("Unsqueeze", [op("Range", ["c_0s", sLen, "c_1s"]), "c_0"]); // [1, S]
    h = op("Add", [h, op("Gather", ["embeddings.position_embeddings.weight", positions])]);
  }

  // Bidirectional attention; padded keys are hidden: bias [B, 1, 1, S]. (Pooling masks padding itself.)
  const keep = (): string => op("Unsqueeze", [op("Cast", ["attention_mask"], { to: { kind: "int", v: DataType.BOOL } }), "c_axes12"]);
  const bias = cfg.num_hidden_layers > 0 ? op("Where", [keep(), "c_zero", "c_neg"]) : "";
  const toHeads = (x: string): string => op("Transpose", [op("Reshape", [x, "c_heads"])], { perm: { kind: "ints", v: [0, 2, 1, 3] } });
  const eps = { kind: "float", v: cfg.layer_norm_eps } as const;

  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `encoder.layer.${l}.`;
    const lw = w.layers[l];
    inits.push(
      f32(p + "ln_1.weight", [E], lw.ln1_g),
      f32(p + "ln_1.bias", [E], lw.ln1_b),
      f32(p + "attention.qkv.weight", [E, 3 * E], lw.qkv_w),
      f32(p + "attention.qkv.bias", [3 * E], lw.qkv_b),
      f32(p + "attention.output.weight", [E, E], lw.proj_w),
      f32(p + "attention.output.bias", [E], lw.proj_b),
      f32(p + "ln_2.weight", [E], lw.ln2_g),
      f32(p + "ln_2.bias", [E], lw.ln2_b),
      f32(p + "intermediate.weight", [E, I], lw.fc_w),
      f32(p + "intermediate.bias", [I], lw.fc_b),
      f32(p + "output.weight", [I, E], lw.out_w),
      f32(p + "output.bias", [E], lw.out_b),
    );
    const x = op("LayerNormalization", [h, p + "ln_1.weight", p + "ln_1.bias"], { axis: { kind: "int", v: -1 }, epsilon: eps });
    const qkv = op("Add", [op("MatMul", [x, p + "attention.qkv.weight"]), p + "attention.qkv.bias"]);
    const [q, k, v] = node("Split", [qkv, "c_split3"], { axis: { kind: "int", v: -1 } }, 3);
    const kT = op("Transpose", [toHeads(k)], { perm: { kind: "ints", v: [0, 1, 3, 2] } });
    const scores = op("Add", [op("MatMul", [op("Mul", [toHeads(q), "c_scale"]), kT]), bias]); // [B,H,S,S]
    const probs = op("Softmax", [scores], { axis: { kind: "int", v: -1 } });
    const ctx = op("Transpose", [op("MatMul", [probs, toHeads(v)])], { perm: { kind: "ints", v: [0, 2, 1, 3] } });
    const attnOut = op("Add", [
      op("MatMul", [op("Reshape", [ctx, "c_merge"]), p + "attention.output.weight"]),
      p + "attention.output.bias",
    ]);
    h = op("Add", [h, attnOut]);

    const x2 = op("LayerNormalization", [h, p + "ln_2.weight", p + "ln_2.bias"], { axis: { kind: "int", v: -1 }, epsilon: eps });
    const fc = op("Gelu", [op("Add", [op("MatMul", [x2, p + "intermediate.weight"]), p + "intermediate.bias"])], {
      approximate: { kind: "string", v: "tanh" },
    });
    const mlpOut = op("Add", [op("MatMul", [fc, p + "output.weight"]), p + "output.bias"]);
    h = op("Add", [h, mlpOut]);
  }
  named("Identity", [h], "last_hidden_state");

  const inputs: ValueInfo[] = [
    { name: "input_ids", elemType: DataType.INT64, shape: ["batch_size", "sequence_length"] },
    { name: "attention_mask", elemType: DataType.INT64, shape: ["batch_size", "sequence_length"] },
  ];
  const outputs: ValueInfo[] = [{ name: "last_hidden_state", elemType: DataType.FLOAT, shape: ["batch_size", "sequence_length", E] }];
  return {
    irVersion: IR_VERSION,
    opset: OPSET,
    producer: "edge-inference-network",
    graphName: "encoder",
    nodes,
    initializers: inits,
    inputs,
    outputs,
  };
}
