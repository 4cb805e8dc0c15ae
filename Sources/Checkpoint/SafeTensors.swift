/// safetensors reader and writer. A file is
///
///     u64 little-endian N | N bytes of UTF-8 JSON header | data
///
/// where the header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
/// (byte offsets relative to the start of the data) plus an optional "__metadata__" object of
/// string values. Every offset is checked against the file before use; tensors may overlap
/// (nothing reads them as owning their bytes) but never reach outside the data.

import Foundation

/// Element types of the safetensors format, spelled as in the header.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL"
    case u8 = "U8", i8 = "I8", f8E5M2 = "F8_E5M2", f8E4M3 = "F8_E4M3"
    case u16 = "U16", i16 = "I16", f16 = "F16", bf16 = "BF16"
    case u32 = "U32", i32 = "I32", f32 = "F32"
    case u64 = "U64", i64 = "I64", f64 = "F64"

    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8E5M2, .f8E4M3: return 1
        case .u16, .i16, .f16, .bf16: return 2
        case .u32, .i32, .f32: return 4
        case .u64, .i64, .f64: return 8
        }
    }

    /// Position in the reference implementation's `Dtype` enum, which orders its writer's layout
    /// (largest rank first); ranks grow with element size, so every tensor stays aligned.
    var referenceRank: Int {
        switch self {
        case .bool: return 0
        case .u8: return 4
        case .i8: return 5
        case .f8E5M2: return 6
        case .f8E4M3: return 7
        case .i16: return 11
        case .u16: return 12
        case .f16: return 13
        case .bf16: return 14
        case .i32: return 15
        case .u32: return 16
        case .f32: return 17
        case .f64: return 19
        case .i64: return 20
        case .u64: return 21
        }
    }

    /// The integer dtype stored as `T` (`Int8` -> I8, `UInt16` -> U16, ...).
    public static func integer<T: FixedWidthInteger>(_: T.Type) -> SafeTensorsDType {
        switch (T.bitWidth, T.isSigned) {
        case (8, true): return .i8
        case (8, false): return .u8
        case (16, true): return .i16
        case (16, false): return .u16
        case (32, true): return .i32
        case (32, false): return .u32
        case (64, true): return .i64
        default: return .u64
        }
    }
}

public struct SafeTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafeTensorsDType
    /// Row-major shape, outermost first ([] for a scalar).
    public let shape: [Int]
    /// Byte range within the data section (after the header).
    public let dataOffsets: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// One memory-mapped .safetensors file.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    /// The header's "__metadata__" (string values only, as the format requires).
    public let metadata: [String: String]
    /// Tensors in header order.
    public let tensors: [SafeTensorInfo]
    /// Absolute file offset of the data section (8 + header length).
    public let dataStart: Int
    private let file: MappedFile
    private let index: [String: Int]

    /// The reference implementation's cap: a larger header is corrupt, not a reason to parse it.
    static let maxHeaderBytes = 100_000_000

    public init(path: String) throws {
        file = try MappedFile(path: path)
        self.path = path
        let bytes = file.bytes
        guard bytes.count >= 8 else { throw CheckpointError.truncated(path, what: "safetensors header length") }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(bytes.count - 8) else {
            throw CheckpointError.invalid(path, detail: "safetensors header length \(declared) runs past the end of the file (\(bytes.count) bytes)")
        }
        guard declared <= UInt64(Self.maxHeaderBytes) else {
            throw CheckpointError.invalid(path, detail: "safetensors header length \(declared) exceeds \(Self.maxHeaderBytes) bytes")
        }
        let headerLength = Int(declared)
        dataStart = 8 + headerLength
        let header: JSONValue
        do {
            header = try JSONValue(parsing: UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        } catch let e as JSONParseError {
            throw CheckpointError.invalid(path, detail: "safetensors header: \(e.description)")
        }
        let parsed = try Self.parseHeader(header, path: path, dataSize: bytes.count - dataStart)
        metadata = parsed.metadata
        tensors = parsed.tensors
        index = Dictionary(uniqueKeysWithValues: parsed.tensors.enumerated().map { ($1.name, $0) })
    }

    public func tensor(_ name: String) -> SafeTensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor's bytes in the map (valid while this object lives).
    public func rawBytes(_ info: SafeTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataStart + info.dataOffsets.lowerBound)..<(dataStart + info.dataOffsets.upperBound)])
    }

    /// A copy of the tensor's bytes, whatever its dtype.
    public func bytes(_ name: String) throws -> [UInt8] {
        Array(rawBytes(try info(name)))
    }

    /// F32, F16, BF16 or F64 values converted to Float32 (row-major, `info.shape`).
    public func floats(_ name: String) throws -> [Float] {
        try floats(try info(name))
    }

    public func floats(_ info: SafeTensorInfo) throws -> [Float] {
        let raw = rawBytes(info)
        let n = info.elementCount
        let convert: (UnsafeRawBufferPointer, UnsafeMutableBufferPointer<Float>) -> Void
        switch info.dtype {
        case .f32: convert = copyFloat32
        case .f16: convert = convertFloat16
        case .bf16: convert = convertBFloat16
        case .f64: convert = convertFloat64
        default:
            throw CheckpointError.unsupportedTensorType(path, tensor: info.name, type: "\(info.dtype.rawValue) (expected a floating-point dtype)")
        }
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            convert(raw, buf)
            count = n
        }
    }

    /// The tensor as a `WeightTensor`: an F32, F16 or BF16 matrix stays in the map (converted
    /// when read); vectors and F64 are converted now.
    public func weightTensor(_ info: SafeTensorInfo) throws -> WeightTensor {
        let type: GGMLType?
        switch info.dtype {
        case .f32: type = .f32
        case .f16: type = .f16
        case .bf16: type = .bf16
        default: type = nil
        }
        if let type, info.shape.count == 2 {
            return WeightTensor(shape: info.shape, mapped: rawBytes(info), type: type, owner: self)
        }
        return WeightTensor(shape: info.shape, values: try floats(info))
    }

    /// The values of an integer tensor whose dtype is exactly `T`'s (I8 as Int8, I32 as Int32, ...).
    public func integers<T: FixedWidthInteger>(_ name: String, as: T.Type) throws -> [T] {
        let info = try info(name)
        let want = SafeTensorsDType.integer(T.self)
        guard info.dtype == want else {
            throw CheckpointError.unsupportedTensorType(path, tensor: name, type: "\(info.dtype.rawValue) (expected \(want.rawValue))")
        }
        let raw = rawBytes(info)
        return (0..<info.elementCount).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * T.bitWidth / 8, as: T.self)) }
    }

    private func info(_ name: String) throws -> SafeTensorInfo {
        guard let info = tensor(name) else { throw CheckpointError.missingTensor(path, tensor: name) }
        return info
    }

    // MARK: header

    static func parseHeader(_ header: JSONValue, path: String, dataSize: Int) throws
        -> (metadata: [String: String], tensors: [SafeTensorInfo]) {
        guard let members = header.members else {
            throw CheckpointError.invalid(path, detail: "safetensors header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var tensors: [SafeTensorInfo] = []
        var seen = Set<String>()
        for (name, value) in members {
            guard seen.insert(name).inserted else {
                throw CheckpointError.invalid(path, detail: "safetensors header names '\(name)' twice")
            }
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
            } else {
                tensors.append(try parseTensor(name, value, path: path, dataSize: dataSize))
            }
        }
        return (metadata, tensors)
    }

    static func parseMetadata(_ value: JSONValue, path: String) throws -> [String: String] {
        guard let members = value.members else {
            throw CheckpointError.invalid(path, detail: "safetensors __metadata__ is not an object")
        }
        var out: [String: String] = [:]
        for (k, v) in members {
            guard let s = v.string else {
                throw CheckpointError.invalid(path, detail: "safetensors __metadata__ '\(k)' is not a string")
            }
            out[k] = s
        }
        return out
    }

    static func parseTensor(_ name: String, _ value: JSONValue, path: String, dataSize: Int) throws -> SafeTensorInfo {
        func bad(_ detail: String) -> CheckpointError { .outOfBounds(path, tensor: name, detail: detail) }
        guard value.members != nil else { throw bad("header entry is not an object") }
        guard let dtypeName = value["dtype"]?.string else { throw bad("has no dtype") }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw CheckpointError.unsupportedTensorType(path, tensor: name, type: dtypeName)
        }
        guard let shapeValues = value["shape"]?.array else { throw bad("has no shape") }
        let shape = shapeValues.compactMap(\.int)
        guard shape.count == shapeValues.count, shape.allSatisfy({ $0 >= 0 }) else {
            throw bad("shape \(shapeValues.map { $0.serialized(indent: nil) }) is not a list of non-negative integers")
        }
        guard let offsetValues = value["data_offsets"]?.array, offsetValues.count == 2,
              let begin = offsetValues[0].int, let end = offsetValues[1].int, begin >= 0, end >= 0 else {
            throw bad("data_offsets is not a pair of non-negative integers")
        }
        guard begin <= end else { throw bad("data_offsets [\(begin), \(end)] begin after they end") }
        guard end <= dataSize else {
            throw bad("data_offsets [\(begin), \(end)] run past the end of the data (\(dataSize) bytes)")
        }
        var bytes = dtype.byteSize
        for d in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow else { throw bad("shape \(shape) is too large") }
            bytes = p
        }
        guard bytes == end - begin else {
            throw bad("holds \(end - begin) bytes but \(dtype.rawValue) \(shape) needs \(bytes)")
        }
        return SafeTensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }
}

// MARK: - Conversions to Float32 (little-endian host, as the format and GGUF assume)

private func copyFloat32(_ raw: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
    guard let src = raw.baseAddress, let dst = out.baseAddress else { return }
    UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: out.count * 4)
}

private func convertFloat16(_ raw: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
    for i in 0..<out.count { out[i] = halfToFloat(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
}

private func convertBFloat16(_ raw: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
    for i in 0..<out.count { out[i] = bf16ToFloat(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
}

private func convertFloat64(_ raw: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
    for i in 0..<out.count { out[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
}

// MARK: - Sharded checkpoints

/// The safetensors weights of a Hugging Face model directory: `model.safetensors`, or the
/// shards listed by `model.safetensors.index.json` ("weight_map": tensor name -> shard file).
public final class SafeTensorsCheckpoint: @unchecked Sendable {
    /// The single file or the index file.
    public let path: String
    public let shards: [SafeTensorsFile]
    /// Tensor names in file (or weight_map) order.
    public let tensorNames: [String]
    private let location: [String: (shard: Int, info: SafeTensorInfo)]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// Opens `model.safetensors` in `directory` if present (as transformers prefers it), else the index.
    public convenience init(directory: String) throws {
        let single = joinPath(directory, Self.singleFileName)
        let index = joinPath(directory, Self.indexFileName)
        if fileExists(single) {
            try self.init(file: single)
        } else if fileExists(index) {
            try self.init(indexFile: index)
        } else {
            throw CheckpointError.missingFile("\(single) (nor \(Self.indexFileName))")
        }
    }

    public init(file: String) throws {
        let shard = try SafeTensorsFile(path: file)
        path = file
        shards = [shard]
        tensorNames = shard.tensors.map(\.name)
        location = Dictionary(uniqueKeysWithValues: shard.tensors.map { ($0.name, (0, $0)) })
    }

    public init(indexFile: String) throws {
        path = indexFile
        let weightMap = try Self.readWeightMap(indexFile)
        let directory = (indexFile as NSString).deletingLastPathComponent
        var shardIndex: [String: Int] = [:]
        var shards: [SafeTensorsFile] = []
        var location: [String: (shard: Int, info: SafeTensorInfo)] = [:]
        for (name, shardName) in weightMap {
            let s: Int
            if let known = shardIndex[shardName] {
                s = known
            } else {
                s = shards.count
                shardIndex[shardName] = s
                shards.append(try SafeTensorsFile(path: joinPath(directory, shardName)))
            }
            guard let info = shards[s].tensor(name) else {
                throw CheckpointError.missingTensor(shards[s].path, tensor: name)
            }
            location[name] = (s, info)
        }
        self.shards = shards
        self.location = location
        tensorNames = weightMap.map(\.0)
    }

    /// weight_map entries in file order; shard names must stay inside the index's directory.
    static func readWeightMap(_ indexFile: String) throws -> [(String, String)] {
        guard let members = try readJSONFile(indexFile)["weight_map"]?.members else {
            throw CheckpointError.missingKey(indexFile, key: "weight_map")
        }
        var seen = Set<String>()
        return try members.map { name, value in
            guard let shard = value.string, !shard.isEmpty, !shard.hasPrefix("/"),
                  !shard.split(separator: "/").contains("..") else {
                throw CheckpointError.invalid(indexFile, detail: "weight_map['\(name)'] is not a shard file name in this directory")
            }
            guard seen.insert(name).inserted else {
                throw CheckpointError.invalid(indexFile, detail: "weight_map names '\(name)' twice")
            }
            return (name, shard)
        }
    }

    public func info(_ name: String) -> SafeTensorInfo? { location[name]?.info }

    /// The shard holding `name`.
    public func file(for name: String) -> SafeTensorsFile? { location[name].map { shards[$0.shard] } }

    public func floats(_ name: String) throws -> [Float] {
        guard let (s, info) = location[name] else { throw CheckpointError.missingTensor(path, tensor: name) }
        return try shards[s].floats(info)
    }

    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let (s, info) = location[name] else { throw CheckpointError.missingTensor(path, tensor: name) }
        return shards[s].rawBytes(info)
    }
}

// MARK: - Writer

/// Collects tensors and writes one .safetensors file byte for byte as the reference library does:
/// header padded with spaces to a multiple of 8 bytes, tensors ordered by dtype (widest first, in
/// the reference's dtype order) then name, so every tensor starts at a multiple of its element
/// size; header entries in data order after "__metadata__" (whose keys we sort; the reference's
/// order is a hash map's). The file is written atomically.
public struct SafeTensorsWriter {
    public var metadata: [String: String]
    private struct Entry {
        let name: String
        let dtype: SafeTensorsDType
        let shape: [Int]
        let byteCount: Int
        let source: Source
    }

    /// Bytes given now, a tensor converted to `dtype` only while the file is written, or bytes
    /// made only then (and dropped once written).
    private enum Source {
        case bytes([UInt8])
        case tensor(WeightTensor)
        case produced(() throws -> [UInt8])
    }
    private var entries: [Entry] = []
    private var names = Set<String>()

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    public var count: Int { entries.count }

    /// Adds a tensor from its raw little-endian bytes, which must be exactly dtype × shape.
    public mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8]) throws {
        guard name != "__metadata__", !name.isEmpty else {
            throw CheckpointError.invalid(name, detail: "is not a valid tensor name")
        }
        guard !names.contains(name) else { throw CheckpointError.invalid(name, detail: "tensor added twice") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw CheckpointError.invalid(name, detail: "negative dimension in \(shape)") }
        let expected = shape.reduce(dtype.byteSize, *)
        guard bytes.count == expected else {
            throw CheckpointError.invalid(name, detail: "\(bytes.count) bytes given, \(dtype.rawValue) \(shape) needs \(expected)")
        }
        names.insert(name)
        entries.append(Entry(name: name, dtype: dtype, shape: shape, byteCount: bytes.count, source: .bytes(bytes)))
    }

    /// Adds a tensor whose little-endian bytes (exactly dtype × shape) `produce` makes while the
    /// file is written, one tensor at a time: a writer of many large tensors then holds only
    /// the one being written.
    public mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int],
                             producedBy produce: @escaping () throws -> [UInt8]) throws {
        guard name != "__metadata__", !name.isEmpty else {
            throw CheckpointError.invalid(name, detail: "is not a valid tensor name")
        }
        guard !names.contains(name) else { throw CheckpointError.invalid(name, detail: "tensor added twice") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw CheckpointError.invalid(name, detail: "negative dimension in \(shape)") }
        names.insert(name)
        entries.append(Entry(name: name, dtype: dtype, shape: shape, byteCount: shape.reduce(dtype.byteSize, *),
                             source: .produced(produce)))
    }

    /// Adds a tensor stored as F32, F16 or BF16 (round to nearest even), converted chunk by
    /// chunk of rows while the file is written: a memory-mapped tensor is never held whole,
    /// neither in Float32 nor in its written form.
    public mutating func add(_ name: String, tensor: WeightTensor, as dtype: SafeTensorsDType) throws {
        guard [.f32, .f16, .bf16].contains(dtype) else {
            throw CheckpointError.invalid(name, detail: "cannot store floats as \(dtype.rawValue)")
        }
        guard name != "__metadata__", !name.isEmpty else {
            throw CheckpointError.invalid(name, detail: "is not a valid tensor name")
        }
        guard !names.contains(name) else { throw CheckpointError.invalid(name, detail: "tensor added twice") }
        names.insert(name)
        entries.append(Entry(name: name, dtype: dtype, shape: tensor.shape, byteCount: tensor.elementCount * dtype.byteSize,
                             source: .tensor(tensor)))
    }

    /// Writes `tensor`'s values as `dtype` in chunks of about a million values.
    private static func writeConverted(_ tensor: WeightTensor, as dtype: SafeTensorsDType, to out: OutputFile) throws {
        defer { tensor.releasePages() }
        let width = tensor.rowWidth
        guard width > 0 else { return }
        let chunkRows = max(1, (1 << 20) / width)
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * width)
        defer { buffer.deallocate() }
        for start in stride(from: 0, to: tensor.rowCount, by: chunkRows) {
            let rows = start..<min(tensor.rowCount, start + chunkRows)
            tensor.readRows(rows, into: buffer)
            let values = UnsafeBufferPointer(start: buffer, count: rows.count * width)
            switch dtype {
            case .f16: try values.map(floatToHalf).withUnsafeBytes { try out.write($0) }
            case .bf16: try values.map(floatToBF16).withUnsafeBytes { try out.write($0) }
            default: try out.write(UnsafeRawBufferPointer(values))
            }
        }
    }

    /// Adds Float32 values stored as F32, F16 or BF16 (round to nearest even), converted only
    /// while the file is written: the writer shares the caller's array (copy on write) instead
    /// of holding a second copy of every tensor as bytes until then.
    public mutating func add(_ name: String, shape: [Int], floats: [Float], as dtype: SafeTensorsDType = .f32) throws {
        guard floats.count == shape.reduce(1, *) else {
            throw CheckpointError.invalid(name, detail: "\(floats.count) values do not fill shape \(shape)")
        }
        guard [.f32, .f16, .bf16].contains(dtype) else {
            throw CheckpointError.invalid(name, detail: "cannot store floats as \(dtype.rawValue)")
        }
        try add(name, dtype: dtype, shape: shape) { Self.bytes(floats: floats, as: dtype)! }
    }

    /// Float32 values as F32, F16 or BF16 bytes (round to nearest even); nil for another dtype.
    public static func bytes(floats: [Float], as dtype: SafeTensorsDType) -> [UInt8]? {
        switch dtype {
        case .f32: return floats.withUnsafeBytes { Array($0) }
        case .f16: return floats.map(floatToHalf).withUnsafeBytes { Array($0) }
        case .bf16: return floats.map(floatToBF16).withUnsafeBytes { Array($0) }
        default: return nil
        }
    }

    /// Integers as their little-endian bytes (the dtype of `T`).
    public static func bytes<T: FixedWidthInteger>(integers: [T]) -> [UInt8] {
        integers.map(\.littleEndian).withUnsafeBytes { Array($0) }
    }

    /// Adds integers with the dtype of `T` (Int8 -> I8, Int16 -> I16, Int32 -> I32, UInt8 -> U8, ...).
    public mutating func add<T: FixedWidthInteger>(_ name: String, shape: [Int], integers: [T]) throws {
        guard integers.count == shape.reduce(1, *) else {
            throw CheckpointError.invalid(name, detail: "\(integers.count) values do not fill shape \(shape)")
        }
        try add(name, dtype: SafeTensorsDType.integer(T.self), shape: shape, bytes: Self.bytes(integers: integers))
    }

    /// Entries in data order with their offsets.
    private var layout: [(index: Int, offsets: Range<Int>)] {
        let order = entries.indices.sorted { a, b in
            let (x, y) = (entries[a], entries[b])
            return x.dtype != y.dtype ? x.dtype.referenceRank > y.dtype.referenceRank : x.name < y.name
        }
        var offset = 0
        return order.map { i in
            defer { offset += entries[i].byteCount }
            return (i, offset..<(offset + entries[i].byteCount))
        }
    }

    /// The 8-byte length prefix and the space-padded header.
    private func header(_ layout: [(index: Int, offsets: Range<Int>)]) -> [UInt8] {
        var members: [(String, JSONValue)] = []
        if !metadata.isEmpty {
            members.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        for (i, offsets) in layout {
            let e = entries[i]
            members.append((e.name, .object([
                ("dtype", .string(e.dtype.rawValue)),
                ("shape", .array(e.shape.map(JSONValue.int))),
                ("data_offsets", .array([.int(offsets.lowerBound), .int(offsets.upperBound)])),
            ])))
        }
        var json = Array(JSONValue.object(members).serialized(indent: nil).utf8)
        json += [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8)
        return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json
    }

    public func write(to path: String) throws {
        let layout = self.layout
        let header = header(layout)
        try writeFileAtomically(path) { out in
            try out.write(header)
            for (i, _) in layout {
                switch entries[i].source {
                case .bytes(let bytes): try out.write(bytes)
                case .tensor(let t): try Self.writeConverted(t, as: entries[i].dtype, to: out)
                case .produced(let produce):
                    let e = entries[i]
                    let bytes = try produce()
                    guard bytes.count == e.byteCount else {
                        throw CheckpointError.invalid(e.name, detail: "\(bytes.count) bytes made, \(e.dtype.rawValue) \(e.shape) needs \(e.byteCount)")
                    }
                    try out.write(bytes)
                }
            }
        }
    }
}
