import XCTest
import Foundation
import Checkpoint

/// Every way a checkpoint can be wrong ends in a `CheckpointError` whose one-line description
/// names the file (and the tensor or key when there is one), never in a trap.
final class BadInputTests: TemporaryDirectoryTestCase {
    // MARK: the file itself

    func testMissingFile() {
        let p = path("nope.gguf")
        assertError(try GGUFFile(path: p), .missingFile(p), "\(p): no such file or directory")
    }

    func testDirectory() {
        assertError(try GGUFFile(path: directory), .unreadable(directory, reason: "is a directory"), "\(directory): cannot read: is a directory")
    }

    func testEmptyFile() throws {
        let p = try write([], "empty.gguf")
        assertError(try GGUFFile(path: p), .truncated(p, what: "magic"), "\(p): file is truncated (while reading magic)")
    }

    func testWrongMagic() throws {
        let p = try write(Array("PK\u{3}\u{4}rest of a zip file".utf8), "model.zip")
        assertError(try GGUFFile(path: p), .badMagic(p, found: "'PK..', expected 'GGUF'"))
    }

    func testUnsupportedVersion() throws {
        for version: UInt32 in [1, 4, 0x0300_0000] {
            var f = HandGGUF()
            f.version = version
            let p = try write(f.bytes(), "v\(version).gguf")
            assertError(try GGUFFile(path: p), .unsupportedVersion(p, Int(version)), "\(p): unsupported GGUF version \(version) (supported: 2, 3)")
        }
    }

    // MARK: truncation

    func testTruncatedAtEveryByte() throws {
        let full = HandGGUF.sample().bytes()
        let dataEnd = HandGGUF.sample().dataEnd
        let p = path("cut.gguf")
        var reasons = Set<String>()
        for cut in 0..<full.count {
            try writeFile(Array(full[..<cut]), p)
            if cut >= dataEnd {
                XCTAssertNoThrow(try GGUFFile(path: p), "cut at \(cut) only drops padding")
                continue
            }
            XCTAssertThrowsError(try GGUFFile(path: p), "cut at \(cut)") { error in
                guard let e = error as? CheckpointError else { return XCTFail("\(error)") }
                XCTAssertTrue(e.description.hasPrefix(p + ": "), e.description)
                switch e {
                case .truncated(_, let what): reasons.insert(what.components(separatedBy: " ").prefix(2).joined(separator: " "))
                case .outOfBounds(_, let tensor, _): reasons.insert("data of \(tensor)")
                default: XCTFail("cut at \(cut): \(e)")
                }
            }
        }
        // Cuts in the header, the metadata, the tensor infos and the tensor data are all reported as such.
        for expected in ["magic", "version", "tensor count", "metadata count", "metadata key", "metadata 'general.architecture'",
                         "name of", "dims of", "type of", "offset of", "data of w", "data of v"] {
            XCTAssertTrue(reasons.contains(where: { $0.hasPrefix(expected) }), "no cut reported '\(expected)': \(reasons.sorted())")
        }
    }

    // MARK: tensor infos

    func testTensorDataPastTheEnd() throws {
        var f = HandGGUF.sample()
        f.infos[1].offset = 1 << 20
        let p = try write(f.bytes(), "offset.gguf")
        assertError(try GGUFFile(path: p), containing: ["\(p): tensor 'v': data (offset 1048576", "past the end"])

        var g = HandGGUF.sample()
        g.infos[0].dims = [8, 1000]     // 32 KB of F32 in a file of a few hundred bytes
        let q = try write(g.bytes(), "size.gguf")
        assertError(try GGUFFile(path: q), containing: ["\(q): tensor 'w': data", "32000 bytes", "past the end"])

        var h = HandGGUF.sample()
        h.infos[0].offset = UInt64.max - 7
        let r = try write(h.bytes(), "huge-offset.gguf")
        assertError(try GGUFFile(path: r), containing: ["\(r): tensor 'w'", "past the end"])
    }

    func testMisalignedOffset() throws {
        var f = HandGGUF.sample()
        f.infos[1].offset = 4
        let p = try write(f.bytes(), "misaligned.gguf")
        assertError(try GGUFFile(path: p), .outOfBounds(p, tensor: "v", detail: "offset 4 is not aligned to 32"))
    }

    func testUnknownTensorType() throws {
        for typeId: UInt32 in [4, 31, 200] {
            var f = HandGGUF.sample()
            f.infos[1].type = typeId
            let p = try write(f.bytes(), "type\(typeId).gguf")
            assertError(try GGUFFile(path: p), .unknownTensorType(p, tensor: "v", type: typeId), "\(p): tensor 'v' has unknown type id \(typeId)")
        }
    }

    func testKnownTypeWithoutDequantizer() throws {
        var w = GGUFWriter()
        try w.addTensor("grid", shape: [256], type: .iq2_xxs, rawBytes: [UInt8](repeating: 0, count: 66))
        let p = path("iq.gguf")
        try w.write(to: p)
        let g = try GGUFFile(path: p)   // opening is fine: the size of every known type is known
        XCTAssertEqual(g.tensor("grid")?.byteCount, 66)
        assertError(try g.floats("grid"), .unsupportedTensorType(p, tensor: "grid", type: "IQ2_XXS"), "\(p): tensor 'grid' has unsupported type IQ2_XXS")
        assertError(try g.floats("absent"), .missingTensor(p, tensor: "absent"))
    }

    func testDuplicateTensorName() throws {
        var f = HandGGUF.sample()
        f.infos[1].name = "w"
        let p = try write(f.bytes(), "dup.gguf")
        assertError(try GGUFFile(path: p), .invalid(p, detail: "tensor 'w' appears twice"))
    }

    func testBadDimensions() throws {
        var f = HandGGUF.sample()
        f.infos[0].dims = [1, 1, 1, 1, 8]
        let p = try write(f.bytes(), "dims.gguf")
        assertError(try GGUFFile(path: p), .outOfBounds(p, tensor: "w", detail: "has 5 dimensions (1 to 4 allowed)"))
        f.infos[0].dims = [8, 1 << 40]
        let q = try write(f.bytes(), "bigdim.gguf")
        assertError(try GGUFFile(path: q), .outOfBounds(q, tensor: "w", detail: "dimension 1099511627776 is implausibly large"))
        f.infos[0].dims = [0x7fff_ffff, 0x7fff_ffff, 0x7fff_ffff, 0x7fff_ffff]   // element count overflows Int
        let r = try write(f.bytes(), "overflow.gguf")
        assertError(try GGUFFile(path: r), containing: ["\(r): tensor 'w'", "do not fit"])
        var g = HandGGUF.sample()
        g.infos[1].type = GGMLType.q8_0.rawValue    // 4 elements are not a whole Q8_0 block
        let s = try write(g.bytes(), "blocks.gguf")
        assertError(try GGUFFile(path: s), containing: ["\(s): tensor 'v'", "do not fit Q8_0 blocks of 32"])
    }

    // MARK: metadata

    func testAbsurdCounts() throws {
        var f = HandGGUF.sample()
        f.tensorCount = 1 << 60
        let p = try write(f.bytes(), "tensors.gguf")
        assertError(try GGUFFile(path: p), containing: ["\(p): header claims 1152921504606846976 tensors", "more than the file can hold"])
        var g = HandGGUF.sample()
        g.metadataCount = UInt64.max
        let q = try write(g.bytes(), "kv.gguf")
        assertError(try GGUFFile(path: q), containing: ["\(q): header claims", "18446744073709551615 metadata entries"])
        var h = HandGGUF.sample()
        h.kvs.append(("big", 9, { b in b.u32(4); b.u64(1 << 50) }))   // an array of 2^50 u32
        let r = try write(h.bytes(), "array.gguf")
        assertError(try GGUFFile(path: r), .truncated(r, what: "metadata 'big'"))
        var j = HandGGUF.sample()
        j.kvs.append(("wide", 9, { b in b.u32(10); b.u64(100) }))    // 100 u64 need 800 bytes, the file has fewer
        let t = try write(j.bytes(), "wide.gguf")
        assertError(try GGUFFile(path: t), .truncated(t, what: "metadata 'wide'"))
        var i = HandGGUF.sample()
        i.kvs.append(("long", 8, { b in b.u64(UInt64.max) }))          // a string of 2^64 - 1 bytes
        let s = try write(i.bytes(), "string.gguf")
        assertError(try GGUFFile(path: s), .truncated(s, what: "metadata 'long'"))
    }

    func testBadMetadataValues() throws {
        let cases: [(String, UInt32, (inout Bytes) -> Void, String)] = [
            ("kind", 13, { _ in }, "metadata 'kind': unknown value type 13"),
            ("flag", 7, { $0.u8(2) }, "metadata 'flag': bool value 2"),
            ("list", 9, { b in b.u32(77); b.u64(0) }, "metadata 'list': unknown value type 77"),
            ("deep", 9, { b in for _ in 0..<6 { b.u32(9); b.u64(1) } }, "metadata 'deep': arrays nested too deeply"),
            ("general.alignment", 4, { $0.u32(0) }, "general.alignment 0 is not a power of two up to 2^30"),
            ("general.alignment", 4, { $0.u32(48) }, "general.alignment 48 is not a power of two up to 2^30"),
            ("general.alignment", 10, { $0.u64(1 << 40) }, "general.alignment 1099511627776 is not a power of two up to 2^30"),
            ("general.alignment", 8, { $0.string("32") }, "general.alignment \"32\" is not an integer"),
        ]
        for (key, type, value, detail) in cases {
            var f = HandGGUF.sample()
            f.kvs.append((key, type, value))
            let p = try write(f.bytes(), "bad.gguf")
            assertError(try GGUFFile(path: p), .invalid(p, detail: detail))
        }
        var f = HandGGUF.sample()
        f.kvs.append(("general.architecture", 8, { $0.string("again") }))
        let p = try write(f.bytes(), "dupkey.gguf")
        assertError(try GGUFFile(path: p), .invalid(p, detail: "metadata key 'general.architecture' appears twice"))
    }

    // MARK: model-level checks

    func testUnsupportedArchitecture() throws {
        var f = HandGGUF.sample()
        f.kvs[0] = ("general.architecture", 8, { $0.string("gpt2") })
        let p = try write(f.bytes(), "gpt2.gguf")
        let g = try GGUFFile(path: p)
        assertError(try g.modelWeights(), .unsupportedArchitecture(p, "gpt2"),
                    "\(p): unsupported architecture 'gpt2' (supported: llama, mistral, qwen2)")
        var h = HandGGUF.sample()
        h.kvs.removeFirst()
        let q = try write(h.bytes(), "noarch.gguf")
        assertError(try GGUFFile(path: q).llamaConfig(), .missingKey(q, key: "general.architecture"))
    }

    func testTensorShapeNotMatchingConfig() throws {
        let p = try rewrittenTinyModel("shape.gguf") { name, shape in
            name == "blk.1.ffn_up.weight" ? [shape[0], shape[1] / 2] : shape
        }
        assertError(try GGUFFile(path: p).modelWeights(),
                    .shapeMismatch(p, tensor: "model.layers.1.mlp.up_proj.weight", expected: [128, 64], found: [128, 32]),
                    "\(p): tensor 'model.layers.1.mlp.up_proj.weight' has shape [128, 32], config expects [128, 64]")
        let q = try rewrittenTinyModel("qshape.gguf") { name, shape in
            name == "blk.0.attn_k.weight" ? [shape[0] / 2, shape[1]] : shape
        }
        assertError(try GGUFFile(path: q).modelWeights(), .shapeMismatch(q, tensor: "blk.0.attn_k.weight", expected: [32, 64], found: [16, 64]))
        let r = try rewrittenTinyModel("missing.gguf") { name, shape in name == "blk.1.attn_v.weight" ? nil : shape }
        assertError(try GGUFFile(path: r).modelWeights(), .missingTensor(r, tensor: "model.layers.1.self_attn.v_proj.weight"))
    }

    func testImplausibleLayerCount() throws {
        var w = try GGUFWriter(tinyFrom: path("tiny.gguf"))
        w.setMetadata("llama.block_count", .uint32(1_000_000_000))
        let p = path("layers.gguf")
        try w.write(to: p)
        assertError(try GGUFFile(path: p).modelWeights(), containing: ["\(p): implausible hyper-parameters (1000000000 layers"])
    }

    func testKnownButUnreadableTypeInModel() throws {
        let p = try rewrittenTinyModel("iq.gguf", iq: "blk.0.ffn_gate.weight") { _, shape in shape }
        assertError(try GGUFFile(path: p).modelWeights(), .unsupportedTensorType(p, tensor: "blk.0.ffn_gate.weight", type: "IQ4_NL"))
    }

    // MARK: robustness

    /// Seeded random corruptions of a small but complete model file (metadata, vocabulary,
    /// F32/Q8_0/Q4_K/Q6_K tensors): each must load or throw a CheckpointError naming the file;
    /// a trap would end the test process.
    func testRandomCorruptionsNeverTrap() throws {
        var config = TinyModel.config
        config.numLayers = 1
        config.hiddenSize = 32
        config.numHeads = 2
        config.numKVHeads = 1
        config.intermediateSize = 256
        let base = path("base.gguf")
        try TinyModel.writeGGUF(to: base, seed: 9, weightType: .q8_0, config: config)
        var w = try GGUFWriter(tinyFrom: base)
        try w.addTensor("extra.q4_k", shape: [256], type: .q4_K, rawBytes: (0..<144).map { UInt8(truncatingIfNeeded: $0 * 7) })
        try w.addTensor("extra.q6_k", shape: [256], type: .q6_K, rawBytes: (0..<210).map { UInt8(truncatingIfNeeded: $0 * 13) })
        try w.write(to: base)
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: base)))
        let headerEnd = try GGUFFile(path: base).tensors.map(\.offset).min()!
        XCTAssertNoThrow(try GGUFFile(path: base).modelWeights())

        var rng = TestLCG(2024)
        let p = path("mutant.gguf")
        var outcomes = [String: Int]()
        for _ in 0..<4000 {
            var bytes = original
            switch rng.below(4) {
            case 0:
                bytes.removeLast(1 + rng.below(bytes.count))
            case 1:
                for _ in 0..<(1 + rng.below(8)) { bytes[rng.below(headerEnd)] = UInt8(rng.below(256)) }
            case 2:
                let at = rng.below(headerEnd - 8)
                let value: UInt64 = [UInt64.max, 1 << 62, UInt64(rng.next()), 0][rng.below(4)]
                withUnsafeBytes(of: value.littleEndian) { for k in 0..<8 { bytes[at + k] = $0[k] } }
            default:
                for _ in 0..<(1 + rng.below(32)) { bytes[rng.below(bytes.count)] ^= UInt8(1 << rng.below(8)) }
            }
            try writeFile(bytes, p)
            do {
                let g = try GGUFFile(path: p)
                _ = g.summary()
                for t in g.tensors where t.type.canDequantize { _ = try g.floats(t) }
                _ = try g.modelWeights()
                outcomes["loaded", default: 0] += 1
            } catch let e as CheckpointError {
                XCTAssertTrue(e.description.hasPrefix(p + ": "), e.description)
                XCTAssertFalse(e.description.contains("\n"), e.description)
                outcomes[Mirror(reflecting: e).children.first?.label ?? "\(e)", default: 0] += 1
            }
        }
        // The loop must exercise both outcomes and most kinds of error.
        XCTAssertGreaterThan(outcomes["loaded", default: 0], 100, "\(outcomes)")
        XCTAssertGreaterThanOrEqual(outcomes.count, 8, "\(outcomes)")
    }

    // MARK: helpers

    /// A tiny model whose tensors are copied through `reshape` (nil drops one); `iq` is stored as
    /// IQ4_NL blocks (a type that has a size but no dequantizer here).
    private func rewrittenTinyModel(_ name: String, iq: String? = nil, reshape: (String, [Int]) -> [Int]?) throws -> String {
        let source = path("tiny-source.gguf")
        try TinyModel.writeGGUF(to: source, seed: 1)
        let g = try GGUFFile(path: source)
        var w = GGUFWriter()
        for key in g.metadataKeys { w.setMetadata(key, g.metadata[key]!) }
        for t in g.tensors {
            guard let shape = reshape(t.name, t.shape) else { continue }
            if t.name == iq {
                let blocks = t.elementCount / 32
                try w.addTensor(t.name, shape: shape, type: .iq4_nl, rawBytes: [UInt8](repeating: 0, count: blocks * 18))
            } else {
                let values = try g.floats(t)
                try w.addTensor(t.name, shape: shape, type: .f32, values: Array(values.prefix(shape.reduce(1, *))))
            }
        }
        let p = path(name)
        try w.write(to: p)
        return p
    }

    private func assertError<T>(_ body: @autoclosure () throws -> T, _ expected: CheckpointError, _ description: String? = nil,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? CheckpointError, expected, file: file, line: line)
            if let description { XCTAssertEqual("\(error)", description, file: file, line: line) }
        }
    }

    private func assertError<T>(_ body: @autoclosure () throws -> T, containing parts: [String],
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertTrue(error is CheckpointError, "\(error)", file: file, line: line)
            for part in parts { XCTAssertTrue("\(error)".contains(part), "'\(error)' lacks '\(part)'", file: file, line: line) }
        }
    }
}

extension GGUFWriter {
    /// A writer holding a copy of a tiny model's metadata and tensors (written there first if absent).
    init(tinyFrom path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { try TinyModel.writeGGUF(to: path, seed: 1) }
        let g = try GGUFFile(path: path)
        self.init(alignment: g.alignment)
        for key in g.metadataKeys { setMetadata(key, g.metadata[key]!) }
        for t in g.tensors { try addTensor(t.name, shape: t.shape, type: t.type, rawBytes: Array(g.rawBytes(t))) }
    }
}

/// A GGUF file assembled field by field, so a test can put any value in any field.
struct HandGGUF {
    var magic = Array("GGUF".utf8)
    var version: UInt32 = 3
    var tensorCount: UInt64?
    var metadataCount: UInt64?
    var kvs: [(key: String, type: UInt32, value: (inout Bytes) -> Void)] = []
    var infos: [(name: String, dims: [UInt64], type: UInt32, offset: UInt64)] = []
    var data: [UInt8] = []

    /// Two F32 tensors: "w" [2, 8] at 0 and "v" [4] at 64, after one metadata entry.
    static func sample() -> HandGGUF {
        var f = HandGGUF()
        f.kvs = [("general.architecture", 8, { $0.string("llama") })]
        f.infos = [("w", [8, 2], 0, 0), ("v", [4], 0, 64)]
        var d = Bytes()
        (0..<16).forEach { d.f32(Float($0)) }
        d.pad(to: 32)
        (0..<4).forEach { d.f32(Float(-$0)) }
        f.data = d.data
        return f
    }

    /// Header and infos padded to 32, then `data`.
    func bytes() -> [UInt8] { header() + data }

    /// Where the last tensor's data ends (later bytes are padding).
    var dataEnd: Int { header().count + data.count }

    private func header() -> [UInt8] {
        var b = Bytes()
        b.data += magic
        b.u32(version)
        b.u64(tensorCount ?? UInt64(infos.count))
        b.u64(metadataCount ?? UInt64(kvs.count))
        for kv in kvs {
            b.string(kv.key)
            b.u32(kv.type)
            kv.value(&b)
        }
        for t in infos {
            b.string(t.name)
            b.u32(UInt32(t.dims.count))
            t.dims.forEach { b.u64($0) }
            b.u32(t.type)
            b.u64(t.offset)
        }
        b.pad(to: 32)
        return b.data
    }
}
