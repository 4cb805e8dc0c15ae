import XCTest
import Foundation
import Checkpoint

final class GGUFWriterTests: TemporaryDirectoryTestCase {
    /// The writer's bytes equal a file assembled by hand from the GGUF v3 specification.
    func testBytesMatchHandAssembledFile() throws {
        var w = GGUFWriter()
        w.setMetadata("general.architecture", .string("llama"))
        w.setMetadata("n", .uint32(7))
        try w.addTensor("a", shape: [2, 3], type: .f32, values: [1, 2, 3, 4, 5, 6])
        try w.addTensor("b", shape: [2], type: .f16, values: [0.5, -2])

        var b = Bytes()
        b.data += Array("GGUF".utf8)
        b.u32(3); b.u64(2); b.u64(2)
        b.string("general.architecture"); b.u32(8); b.string("llama")
        b.string("n"); b.u32(4); b.u32(7)
        b.string("a"); b.u32(2); b.u64(3); b.u64(2); b.u32(0); b.u64(0)    // dims fastest first
        b.string("b"); b.u32(1); b.u64(2); b.u32(1); b.u64(32)             // 24 bytes of "a" padded to 32
        b.pad(to: 32)
        [1, 2, 3, 4, 5, 6].forEach { b.f32($0) }
        b.pad(to: 32)
        b.u16(0x3800); b.u16(0xc000)
        b.pad(to: 32)
        XCTAssertEqual(try w.serialized(), b.data)
    }

    func testMetadataOfEveryTypeRoundTrips() throws {
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(200)), ("i8", .int8(-100)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("f32", .float32(-1.25)),
            ("bool", .bool(true)), ("string", .string("héllo wörld")), ("empty string", .string("")),
            ("u64", .uint64(.max)), ("i64", .int64(.min)), ("f64", .float64(3.141592653589793)),
            ("strings", .array([.string("a"), .string("bc")])), ("ints", .array([.int32(1), .int32(-2)])),
            ("nested", .array([.array([.uint8(1)]), .array([.uint8(2), .uint8(3)])])), ("empty", .array([])),
        ]
        var w = GGUFWriter()
        for (k, v) in values { w.setMetadata(k, v) }
        w.setMetadata("u8", .uint8(201))   // replaces in place
        let p = path("meta.gguf")
        try w.write(to: p)
        let g = try GGUFFile(path: p)
        XCTAssertEqual(g.metadataKeys, values.map(\.0))
        XCTAssertEqual(g.metadata["u8"], .uint8(201))
        for (k, v) in values.dropFirst() { XCTAssertEqual(g.metadata[k], v, k) }
        XCTAssertTrue(g.tensors.isEmpty)
    }

    func testTensorsRoundTrip() throws {
        var rng = TestLCG(4)
        let x: [Float] = (0..<128).map { _ in Float(rng.below(20001) - 10000) / 1000 }
        var w = GGUFWriter()
        for type: GGMLType in [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1] {
            try w.addTensor(type.name, shape: [2, 64], type: type, values: x)
        }
        let p = path("tensors.gguf")
        try w.write(to: p)
        let g = try GGUFFile(path: p)
        XCTAssertEqual(g.tensors.map(\.name), ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
        XCTAssertEqual(try g.floats("F32"), x)
        XCTAssertEqual(try g.floats("F16"), x.map { Float(Float16($0)) })
        // bf16 keeps the top 16 bits after rounding: within half a bf16 ulp (2^-8 relative).
        for (a, b) in zip(try g.floats("BF16"), x) { XCTAssertLessThanOrEqual(abs(a - b), abs(b) / 256) }
        // Block quantizers: within half a step, plus the f16 rounding of scale and min. Q4_0's
        // codes reach -8d on the side of the extreme value but only 7d on the other, where the
        // error can reach a whole step.
        for (name, levels, steps) in [("Q8_0", 127, Float(0.5)), ("Q4_0", 8, 1), ("Q4_1", 15, 0.5)] {
            let got = try g.floats(name)
            XCTAssertEqual(g.tensor(name)?.type.name, name)
            for block in 0..<4 {
                let r = (32 * block)..<(32 * block + 32)
                let range = name == "Q4_1" ? x[r].max()! - x[r].min()! : x[r].map(abs).max()!
                let step = range / Float(levels)
                for i in r { XCTAssertLessThanOrEqual(abs(got[i] - x[i]), step * steps + abs(x[i]) * 2e-3 + 1e-3, "\(name) \(i)") }
            }
        }
    }

    /// Q8_0 as ggml's quantize_row_q8_0_ref: d = amax / 127 stored as f16, q = roundf(x / d).
    func testQ8_0BlockBytes() throws {
        // x_j = j - 15 for j < 32: amax 16, d = 16/127; x/d = (j - 15) * 127 / 16.
        let x: [Float] = (0..<32).map { Float($0 - 15) }
        var w = GGUFWriter()
        try w.addTensor("q", shape: [32], type: .q8_0, values: x)
        let g = try GGUFFile(path: try { let p = path("q8.gguf"); try w.write(to: p); return p }())
        let raw = Array(g.rawBytes(g.tensor("q")!))
        XCTAssertEqual(raw.count, 34)
        XCTAssertEqual(UInt16(raw[0]) | UInt16(raw[1]) << 8, Float16(Float(16) / 127).bitPattern)
        // j = 0: -15 * 127 / 16 = -119.0625 -> -119; j = 31: 16 * 127/16 = 127; j = 16: 7.9375 -> 8;
        // j = 23: 8 * 7.9375 = 63.5 -> 64 (half away from zero, as roundf).
        XCTAssertEqual(Int8(bitPattern: raw[2 + 0]), -119)
        XCTAssertEqual(Int8(bitPattern: raw[2 + 31]), 127)
        XCTAssertEqual(Int8(bitPattern: raw[2 + 16]), 8)
        XCTAssertEqual(Int8(bitPattern: raw[2 + 23]), 64)
        XCTAssertEqual(Int8(bitPattern: raw[2 + 15]), 0)
    }

    /// Q4_1 as quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5)).
    func testQ4_1BlockBytes() {
        // x_j = j / 4: min 0, max 7.75, d = 7.75 / 15, so (x - m) / d = j * 15 / 31.
        let raw = encodeBlocks((0..<32).map { Float($0) / 4 }, as: .q4_1)
        XCTAssertEqual(raw.count, 20)
        XCTAssertEqual(UInt16(raw[0]) | UInt16(raw[1]) << 8, Float16(Float(7.75) / 15).bitPattern)
        XCTAssertEqual(UInt16(raw[2]) | UInt16(raw[3]) << 8, 0, "m = 0")
        // j = 1: 0.48 + 0.5 -> 0; j = 2: 0.97 + 0.5 -> 1; j = 16: 7.74 + 0.5 -> 8; j = 17: 8.23 + 0.5 -> 8; j = 31: 15.
        XCTAssertEqual(raw[4 + 1] & 15, 0)
        XCTAssertEqual(raw[4 + 2] & 15, 1)
        XCTAssertEqual(raw[4 + 0] >> 4, 8)
        XCTAssertEqual(raw[4 + 1] >> 4, 8)
        XCTAssertEqual(raw[4 + 15] >> 4, 15)
    }

    func testRawBlocksOfAnyType() throws {
        let raw = (0..<144).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        var w = GGUFWriter()
        try w.addTensor("k", shape: [256], type: .q4_K, rawBytes: raw)
        try w.addTensor("iq", shape: [1, 256], type: .iq2_xxs, rawBytes: [UInt8](repeating: 1, count: 66))
        let p = path("raw.gguf")
        try w.write(to: p)
        let g = try GGUFFile(path: p)
        XCTAssertEqual(Array(g.rawBytes(g.tensor("k")!)), raw)
        XCTAssertEqual(g.tensor("iq")?.type, .iq2_xxs)
        XCTAssertEqual(try g.floats("k").count, 256)
    }

    func testCustomAlignment() throws {
        var w = GGUFWriter(alignment: 64)
        try w.addTensor("a", shape: [3], type: .f32, values: [1, 2, 3])
        try w.addTensor("b", shape: [5], type: .f32, values: [4, 5, 6, 7, 8])
        let p = path("align.gguf")
        try w.write(to: p)
        let g = try GGUFFile(path: p)
        XCTAssertEqual(g.alignment, 64)
        XCTAssertEqual(g.metadata["general.alignment"], .uint32(64))
        for t in g.tensors { XCTAssertEqual(t.offset % 64, 0, t.name) }
        XCTAssertEqual(g.tensor("b")!.offset - g.tensor("a")!.offset, 64)
        XCTAssertEqual(try g.floats("b"), [4, 5, 6, 7, 8])
    }

    func testWriteIsAtomicAndReplacesTheTarget() throws {
        let p = path("model.gguf")
        try Data("old contents".utf8).write(to: URL(fileURLWithPath: p))
        var w = GGUFWriter()
        w.setMetadata("k", .string("new"))
        try w.write(to: p)
        XCTAssertEqual(try GGUFFile(path: p).metadata["k"], .string("new"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["model.gguf"], "no temporary left behind")

        let missing = path("no/such/dir/model.gguf")
        XCTAssertThrowsError(try w.write(to: missing)) { error in
            XCTAssertTrue("\(error)".hasPrefix(missing + ": cannot write"), "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["model.gguf"])
    }

    func testRejectsBadTensors() throws {
        var w = GGUFWriter()
        try w.addTensor("t", shape: [32], type: .f32, values: [Float](repeating: 0, count: 32))
        let cases: [(String, (inout GGUFWriter) throws -> Void)] = [
            ("added twice", { try $0.addTensor("t", shape: [32], type: .f32, values: [Float](repeating: 0, count: 32)) }),
            ("not whole Q8_0 blocks", { try $0.addTensor("u", shape: [2, 48], type: .q8_0, values: [Float](repeating: 0, count: 96)) }),
            ("needs 6 values", { try $0.addTensor("u", shape: [2, 3], type: .f32, values: [1]) }),
            ("cannot encode Q2_K", { try $0.addTensor("u", shape: [256], type: .q2_K, values: [Float](repeating: 0, count: 256)) }),
            ("takes 144 bytes", { try $0.addTensor("u", shape: [256], type: .q4_K, rawBytes: [1, 2]) }),
            ("1 to 4", { try $0.addTensor("u", shape: [1, 1, 1, 1, 1], type: .f32, values: [1]) }),
        ]
        for (expected, add) in cases {
            XCTAssertThrowsError(try add(&w), expected) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
                XCTAssertTrue(error is CheckpointError)
            }
        }
        w.setMetadata("mixed", .array([.uint8(1), .string("x")]))
        XCTAssertThrowsError(try w.serialized()) { XCTAssertTrue("\($0)".contains("'mixed': array mixes value types"), "\($0)") }
    }
}
