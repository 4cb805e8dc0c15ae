import XCTest
import Foundation
import Checkpoint

final class SafeTensorsTests: TemporaryDirectoryTestCase {
    var dir: String { directory }

    /// A file with `header` as its JSON header (unpadded) followed by `data`.
    func rawFile(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> String {
        let json = Array(header.utf8)
        var bytes = withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { Array($0) }
        bytes += json + data
        return try write(bytes, "t-\(UUID().uuidString).safetensors")
    }

    func assertError(_ expected: (CheckpointError) -> Bool, _ body: () throws -> Void,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? CheckpointError else { return XCTFail("not a CheckpointError: \(error)", file: file, line: line) }
            XCTAssertTrue(expected(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), file: file, line: line)
        }
    }

    // MARK: round trips

    func testFloatRoundTripPerDtype() throws {
        var rng = TestLCG(7)
        let values = (0..<60).map { _ in Float(rng.below(1 << 20)) / Float(1 << 18) - 2 } + [0, -0.0, 1e-8, 65504, .infinity]
        var writer = SafeTensorsWriter(metadata: ["format": "pt", "note": "quoted \"text\" and ünïcode"])
        try writer.add("w.f32", shape: [5, 13], floats: values, as: .f32)
        try writer.add("w.f16", shape: [65], floats: values, as: .f16)
        try writer.add("w.bf16", shape: [13, 5], floats: values, as: .bf16)
        try writer.write(to: path("m.safetensors"))

        let f = try SafeTensorsFile(path: path("m.safetensors"))
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "quoted \"text\" and ünïcode"])
        XCTAssertEqual(f.tensor("w.f32")?.shape, [5, 13])
        XCTAssertEqual(f.tensor("w.f16")?.dtype, .f16)
        XCTAssertEqual(try f.floats("w.f32").map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertEqual(try f.floats("w.f16").map(\.bitPattern), values.map { halfToFloat(floatToHalf($0)).bitPattern })
        XCTAssertEqual(try f.floats("w.bf16").map(\.bitPattern), values.map { bf16ToFloat(floatToBF16($0)).bitPattern })
        XCTAssertEqual(try f.bytes("w.f16"), values.map(floatToHalf).withUnsafeBytes { Array($0) })
    }

    func testIntegerRoundTripPerDtype() throws {
        let i8: [Int8] = [-128, -1, 0, 1, 127, 42]
        let i16: [Int16] = [-32768, -2, 0, 3, 32767, 1000]
        let i32: [Int32] = [Int32.min, -5, 0, 7, Int32.max, 123_456]
        let u8: [UInt8] = [0, 1, 128, 255]
        var writer = SafeTensorsWriter()
        try writer.add("codes.i8", shape: [2, 3], integers: i8)
        try writer.add("codes.i16", shape: [3, 2], integers: i16)
        try writer.add("codes.i32", shape: [6], integers: i32)
        try writer.add("raw.u8", shape: [4], integers: u8)
        try writer.add("scalar", dtype: .i32, shape: [], bytes: [1, 0, 0, 0])
        try writer.add("empty", shape: [0, 4], floats: [])
        try writer.write(to: path("i.safetensors"))

        let f = try SafeTensorsFile(path: path("i.safetensors"))
        XCTAssertTrue(f.metadata.isEmpty)
        XCTAssertEqual(try f.integers("codes.i8", as: Int8.self), i8)
        XCTAssertEqual(try f.integers("codes.i16", as: Int16.self), i16)
        XCTAssertEqual(try f.integers("codes.i32", as: Int32.self), i32)
        XCTAssertEqual(try f.integers("raw.u8", as: UInt8.self), u8)
        XCTAssertEqual(try f.integers("scalar", as: Int32.self), [1])
        XCTAssertEqual(f.tensor("scalar")?.shape, [])
        XCTAssertEqual(f.tensor("empty")?.shape, [0, 4])
        XCTAssertEqual(try f.floats("empty"), [])
        XCTAssertEqual(f.tensor("codes.i16").map { Array(f.rawBytes($0)) }, i16.withUnsafeBytes { Array($0) })
        // The dtype is part of the contract: reading I16 as I8 or floats is an error, not a reinterpretation.
        assertError({ if case .unsupportedTensorType(_, "codes.i16", _) = $0 { return true }; return false }) {
            _ = try f.integers("codes.i16", as: Int8.self)
        }
        assertError({ if case .unsupportedTensorType(_, "codes.i8", _) = $0 { return true }; return false }) {
            _ = try f.floats("codes.i8")
        }
        assertError({ if case .missingTensor(_, "nope") = $0 { return true }; return false }) { _ = try f.floats("nope") }
    }

    /// The layout the reference library writes: 8-aligned header padded with spaces, tensors
    /// ordered by the reference's dtype rank (BF16 before F16 before I16) then name, contiguous data.
    func testLayoutMatchesReferenceConventions() throws {
        var writer = SafeTensorsWriter()
        try writer.add("b", shape: [3], integers: [Int8](repeating: 1, count: 3))
        try writer.add("a", shape: [3], floats: [1, 2, 3], as: .f16)
        try writer.add("c", shape: [2], floats: [1, 2])
        try writer.add("d", shape: [1], integers: [Int32(9)])
        try writer.add("e", shape: [2], integers: [Int16(-1), 1])
        try writer.add("f", shape: [1], floats: [0.5], as: .bf16)
        try writer.write(to: path("l.safetensors"))
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path("l.safetensors"))))
        let n = Int(bytes[0..<8].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        XCTAssertEqual(n % 8, 0)
        let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        XCTAssertEqual(header.trimmingCharacters(in: .whitespaces),
                       #"{"c":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"d":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},"f":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},"a":{"dtype":"F16","shape":[3],"data_offsets":[14,20]},"e":{"dtype":"I16","shape":[2],"data_offsets":[20,24]},"b":{"dtype":"I8","shape":[3],"data_offsets":[24,27]}}"#)
        XCTAssertEqual(bytes.count, 8 + n + 27)
        let f = try SafeTensorsFile(path: path("l.safetensors"))
        XCTAssertEqual(f.tensors.map(\.name), ["c", "d", "f", "a", "e", "b"])
        XCTAssertEqual(f.dataStart, 8 + n)
    }

    func testWriterRejectsBadInput() throws {
        var w = SafeTensorsWriter()
        try w.add("x", shape: [2], floats: [1, 2])
        assertError({ if case .invalid("x", _) = $0 { return true }; return false }) { try w.add("x", shape: [2], floats: [1, 2]) }
        assertError({ if case .invalid("y", _) = $0 { return true }; return false }) { try w.add("y", shape: [3], floats: [1, 2]) }
        assertError({ if case .invalid("z", _) = $0 { return true }; return false }) { try w.add("z", dtype: .i16, shape: [2], bytes: [0, 0, 0]) }
        assertError({ if case .invalid("q", _) = $0 { return true }; return false }) { try w.add("q", shape: [1], floats: [1], as: .i8) }
        assertError({ if case .invalid("__metadata__", _) = $0 { return true }; return false }) { try w.add("__metadata__", shape: [1], floats: [1]) }
        XCTAssertEqual(w.count, 1)
    }

    func testWriteIsAtomicAndLeavesNoTemporaries() throws {
        var w = SafeTensorsWriter()
        try w.add("x", shape: [1], floats: [1])
        try w.write(to: path("a.safetensors"))
        try w.write(to: path("a.safetensors"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["a.safetensors"])
        assertError({ if case .unreadable = $0 { return true }; return false }) { try w.write(to: path("no/such/dir/a.safetensors")) }
    }

    // MARK: bad files

    func testHeaderLengthPastEnd() throws {
        let p = try rawFile("{}", declaredLength: 1000)
        assertError({ if case .invalid(p, let d) = $0 { return d.contains("header length 1000") }; return false }) { _ = try SafeTensorsFile(path: p) }
        let huge = try rawFile("{}", declaredLength: UInt64.max)
        assertError({ if case .invalid(huge, _) = $0 { return true }; return false }) { _ = try SafeTensorsFile(path: huge) }
    }

    func testShorterThanLengthPrefix() throws {
        let p = path("short.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: p))
        assertError({ if case .truncated(p, _) = $0 { return true }; return false }) { _ = try SafeTensorsFile(path: p) }
    }

    func testMalformedHeaders() throws {
        for header in ["{\"a\": ", "[1, 2]", "{\"a\":{\"dtype\":\"F32\"}}", #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, #"{"__metadata__":{"k":1}}"#,
                       #"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#] {
            let p = try rawFile(header, data: [0, 0, 0, 0])
            assertError({ e in
                switch e {
                case .invalid(p, _), .outOfBounds(p, _, _): return true
                default: return false
                }
            }) { _ = try SafeTensorsFile(path: p) }
        }
    }

    func testOffsetsPastEnd() throws {
        let p = try rawFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError({ if case .outOfBounds(p, "w", let d) = $0 { return d.contains("past the end") }; return false }) { _ = try SafeTensorsFile(path: p) }
    }

    func testBeginAfterEnd() throws {
        let p = try rawFile(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError({ if case .outOfBounds(p, "w", let d) = $0 { return d.contains("begin after") }; return false }) { _ = try SafeTensorsFile(path: p) }
    }

    func testSizeNotMatchingShape() throws {
        let p = try rawFile(#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError({ if case .outOfBounds(p, "w", let d) = $0 { return d.contains("needs 6") }; return false }) { _ = try SafeTensorsFile(path: p) }
        let overflow = try rawFile(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError({ if case .outOfBounds(overflow, "w", _) = $0 { return true }; return false }) { _ = try SafeTensorsFile(path: overflow) }
    }

    func testUnknownDtype() throws {
        let p = try rawFile(#"{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
        assertError({ if case .unsupportedTensorType(p, "w", "Q4") = $0 { return true }; return false }) { _ = try SafeTensorsFile(path: p) }
    }

    func testOverlappingTensorsAreAllowed() throws {
        let data = [1.5, -2.0].flatMap { (v: Float) in withUnsafeBytes(of: v) { Array($0) } }
        let p = try rawFile(#"{"all":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: data)
        let f = try SafeTensorsFile(path: p)
        XCTAssertEqual(try f.floats("all"), [1.5, -2.0])
        XCTAssertEqual(try f.floats("second"), [-2.0])
    }

    // MARK: sharded checkpoints

    func writeShards() throws {
        var a = SafeTensorsWriter(metadata: ["format": "pt"])
        try a.add("model.embed_tokens.weight", shape: [2, 2], floats: [1, 2, 3, 4])
        try a.add("unlisted", shape: [1], floats: [0])
        try a.write(to: path("model-00001-of-00002.safetensors"))
        var b = SafeTensorsWriter(metadata: ["format": "pt"])
        try b.add("model.norm.weight", shape: [2], floats: [5, 6], as: .bf16)
        try b.write(to: path("model-00002-of-00002.safetensors"))
    }

    func writeIndex(_ map: String) throws {
        try #"{"metadata":{"total_size":24},"weight_map":\#(map)}"#.write(toFile: path("model.safetensors.index.json"), atomically: true, encoding: .utf8)
    }

    func testShardedIndex() throws {
        try writeShards()
        try writeIndex(#"{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","model.norm.weight":"model-00002-of-00002.safetensors"}"#)
        let c = try SafeTensorsCheckpoint(directory: dir)
        XCTAssertEqual(c.shards.count, 2)
        XCTAssertEqual(c.tensorNames, ["model.embed_tokens.weight", "model.norm.weight"])
        XCTAssertEqual(try c.floats("model.embed_tokens.weight"), [1, 2, 3, 4])
        XCTAssertEqual(try c.floats("model.norm.weight"), [5, 6])
        XCTAssertEqual(c.info("model.norm.weight")?.dtype, .bf16)
        XCTAssertEqual(c.file(for: "model.norm.weight")?.path, path("model-00002-of-00002.safetensors"))
        XCTAssertNil(c.info("unlisted"))
    }

    func testShardedIndexErrors() throws {
        try writeShards()
        let index = path("model.safetensors.index.json")
        try writeIndex(#"{"model.norm.weight":"model-00001-of-00002.safetensors"}"#)
        assertError({ if case .missingTensor(let f, "model.norm.weight") = $0 { return f.hasSuffix("00001-of-00002.safetensors") }; return false }) {
            _ = try SafeTensorsCheckpoint(directory: dir)
        }
        try writeIndex(#"{"x":"model-00009-of-00009.safetensors"}"#)
        assertError({ if case .missingFile(let f) = $0 { return f.hasSuffix("00009-of-00009.safetensors") }; return false }) {
            _ = try SafeTensorsCheckpoint(directory: dir)
        }
        try writeIndex(#"{"x":"../escape.safetensors"}"#)
        assertError({ if case .invalid(index, _) = $0 { return true }; return false }) { _ = try SafeTensorsCheckpoint(directory: dir) }
        try #"{"metadata":{}}"#.write(toFile: index, atomically: true, encoding: .utf8)
        assertError({ if case .missingKey(index, "weight_map") = $0 { return true }; return false }) { _ = try SafeTensorsCheckpoint(directory: dir) }
        try FileManager.default.removeItem(atPath: index)
        assertError({ if case .missingFile = $0 { return true }; return false }) { _ = try SafeTensorsCheckpoint(directory: dir) }
    }
}
