// Minimal ONNX protobuf writer: just the onnx.proto messages a plain inference graph needs.
// Hand-written instead of a protobuf library so the output bytes depend on nothing but this file.
// Field numbers follow onnx/onnx.proto (proto2); repeated scalars are written unpacked, which
// every protobuf parser accepts.

export const DataType = { FLOAT: 1, INT64: 7, BOOL: 9 } as const;

export interface TensorInit {
  name: string;
  dataType: number;
  dims: number[];
  /** Little-endian raw bytes (TensorProto.raw_data). */
  raw: Uint8Array;
}

export type AttrValue =
  | { kind: "int"; v: number }
  | { kind: "ints"; v: number[] }
  | { kind: "float"; v: number }
  | { kind: "string"; v: string }
  | { kind: "tensor"; v: TensorInit };

export interface NodeDef {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attrs?: Record<string, AttrValue>;
}

export interface ValueInfo {
  name: string;
  elemType: number;
  /** A number is a fixed dim, a string a symbolic (dynamic) one. */
  shape: (number | string)[];
}

export interface ModelDef {
  irVersion: number;
  opset: number;
  producer: string;
  graphName: string;
  nodes: NodeDef[];
  initializers: TensorInit[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

const utf8 = new TextEncoder();

/** Growable byte buffer with protobuf wire-format primitives. */
class Writer {
  private buf = new Uint8Array(1024);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private varint(value: bigint): void {
    // int64 fields: negatives are encoded as 10-byte two's complement varints.
    let v = BigInt.asUintN(64, value);
    this.ensure(10);
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }

  private tag(field: number, wire: number): void {
    this.varint(BigInt((field << 3) | wire));
  }

  int(field: number, value: number): void {
    this.tag(field, 0);
    this.varint(BigInt(value));
  }

  float(field: number, value: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(BigInt(data.length));
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, utf8.encode(s));
  }

  message(field: number, write: (w: Writer) => void): void {
    const inner = new Writer();
    write(inner);
    this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

function writeTensor(w: Writer, t: TensorInit): void {
  for (const d of t.dims) w.int(1, d); // dims
  w.int(2, t.dataType); // data_type
  w.string(8, t.name); // name
  w.bytes(9, t.raw); // raw_data
}

const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, INTS: 7 } as const;

function writeAttr(w: Writer, name: string, a: AttrValue): void {
  w.string(1, name);
  switch (a.kind) {
    case "float":
      w.float(2, a.v);
      w.int(20, AttrType.FLOAT);
      break;
    case "int":
      w.int(3, a.v);
      w.int(20, AttrType.INT);
      break;
    case "string":
      w.string(4, a.v);
      w.int(20, AttrType.STRING);
      break;
    case "tensor":
      w.message(5, (m) => writeTensor(m, a.v));
      w.int(20, AttrType.TENSOR);
      break;
    case "ints":
      for (const v of a.v) w.int(8, v);
      w.int(20, AttrType.INTS);
      break;
  }
}

function writeNode(w: Writer, n: NodeDef): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.message(5, (m) => writeAttr(m, k, v));
}

function writeValueInfo(w: Writer, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.shape) {
          shape.message(1, (dim) => (typeof d === "number" ? dim.int(1, d) : dim.string(2, d)));
        }
      });
    }),
  );
}

/** Serialises a ModelProto. */
export function encodeModel(m: ModelDef): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, m.producer);
  w.string(3, "1");
  w.message(7, (g) => {
    for (const n of m.nodes) g.message(1, (x) => writeNode(x, n));
    g.string(2, m.graphName);
    for (const t of m.initializers) g.message(5, (x) => writeTensor(x, t));
    for (const v of m.inputs) g.message(11, (x) => writeValueInfo(x, v));
    for (const v of m.outputs) g.message(12, (x) => writeValueInfo(x, v));
  });
  w.message(8, (o) => {
    o.string(1, "");
    o.int(2, m.opset);
  });
  return w.finish();
}
