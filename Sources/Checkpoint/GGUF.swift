/// GGUF (v2/v3) reader: header, metadata of every value type, tensor infos, alignment, and
/// on-demand dequantization of memory-mapped tensor data. Every offset and size is checked
/// against the file before it is used.

public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return int.map { $0 != 0 } }
    public var array: [GGUFValue]? { if case .array(let a) = self { return a }; return nil }

    /// Short rendering for `inspect`: arrays are summarised by length.
    public var summary: String {
        switch self {
        case .string(let s): return s.count > 80 ? "\"\(s.prefix(77))...\"" : "\"\(s)\""
        case .array(let a): return "[\(a.count) items]"
        case .float32(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        case .bool(let b): return "\(b)"
        default: return int.map(String.init) ?? "?"
        }
    }
}

/// A name read from a file, safe to put in a one-line message: control and other unprintable
/// characters escaped, cut at 80 characters.
func printable(_ s: String) -> String {
    var out = ""
    for scalar in s.unicodeScalars {
        let unprintable = scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format
            || scalar == "\u{FFFD}" || scalar.properties.generalCategory == .lineSeparator
            || scalar.properties.generalCategory == .paragraphSeparator
        out += unprintable ? scalar.escaped(asASCII: true) : String(scalar)
        if out.count > 80 { return String(out.prefix(77)) + "..." }
    }
    return out
}

public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// Dimensions in GGML order: dims[0] is the contiguous (fastest) one.
    public let dims: [Int]
    public let type: GGMLType
    /// Absolute byte offset of the data in the file.
    public let offset: Int
    public let byteCount: Int

    public var elementCount: Int { dims.reduce(1, *) }
    /// Row-major shape, outermost first (a [d_out, d_in] matrix for a linear weight).
    public var shape: [Int] { dims.reversed() }
}

public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: Int
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    private let file: MappedFile
    private let tensorIndex: [String: Int]

    public init(path: String) throws {
        file = try MappedFile(path: path)
        self.path = path
        var c = ByteCursor(file.bytes, path: path)
        try c.need(4, "magic")
        let magicBytes = Array(file.bytes[0..<4])
        guard magicBytes == Array("GGUF".utf8) else {
            let shown = magicBytes.map { (32...126).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            throw CheckpointError.badMagic(path, found: "'\(shown)', expected 'GGUF'")
        }
        c.offset = 4
        version = Int(try c.read(UInt32.self, "version"))
        guard version == 2 || version == 3 else { throw CheckpointError.unsupportedVersion(path, version) }
        let nTensors = try c.read(UInt64.self, "tensor count")
        let nKV = try c.read(UInt64.self, "metadata count")
        // Each entry takes at least 8 bytes; a count beyond that is corrupt, not a reason to allocate.
        guard nTensors <= UInt64(file.bytes.count / 8), nKV <= UInt64(file.bytes.count / 8) else {
            throw CheckpointError.invalid(path, detail: "header claims \(nTensors) tensors and \(nKV) metadata entries, more than the file can hold")
        }

        var keys: [String] = []
        var meta: [String: GGUFValue] = [:]
        for i in 0..<Int(nKV) {
            let key = try Self.readString(&c, "metadata key \(i)")
            let shown = printable(key)
            let typeId = try c.read(UInt32.self, "type of metadata '\(shown)'")
            let value = try Self.readValue(&c, typeId: typeId, what: "metadata '\(shown)'", depth: 0)
            guard meta[key] == nil else { throw CheckpointError.invalid(path, detail: "metadata key '\(shown)' appears twice") }
            keys.append(key)
            meta[key] = value
        }
        metadataKeys = keys
        metadata = meta
        let align = try Self.alignment(meta["general.alignment"], path: path)
        alignment = align

        struct RawInfo { let name: String; let dims: [Int]; let typeId: UInt32; let rel: UInt64 }
        var raws: [RawInfo] = []
        for i in 0..<Int(nTensors) {
            let name = try Self.readString(&c, "name of tensor info \(i)")
            let shown = printable(name)
            let nDims = try c.read(UInt32.self, "dims of tensor '\(shown)'")
            guard nDims >= 1 && nDims <= 4 else {
                throw CheckpointError.outOfBounds(path, tensor: shown, detail: "has \(nDims) dimensions (1 to 4 allowed)")
            }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try c.read(UInt64.self, "dims of tensor '\(shown)'")
                guard d <= UInt64(Int32.max) else {
                    throw CheckpointError.outOfBounds(path, tensor: shown, detail: "dimension \(d) is implausibly large")
                }
                dims.append(Int(d))
            }
            let typeId = try c.read(UInt32.self, "type of tensor '\(shown)'")
            let rel = try c.read(UInt64.self, "offset of tensor '\(shown)'")
            raws.append(RawInfo(name: name, dims: dims, typeId: typeId, rel: rel))
        }
        let dataStart = (c.offset + align - 1) / align * align
        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for r in raws {
            let shown = printable(r.name)
            guard let type = GGMLType(rawValue: r.typeId) else {
                throw CheckpointError.unknownTensorType(path, tensor: shown, type: r.typeId)
            }
            let (count, overflow) = r.dims.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o)
            }
            guard !overflow, let bytes = type.byteCount(elements: count) else {
                throw CheckpointError.outOfBounds(path, tensor: shown, detail: "\(r.dims) elements do not fit \(type.name) blocks of \(type.blockSize)")
            }
            guard r.rel <= UInt64(file.bytes.count), dataStart + Int(r.rel) <= file.bytes.count - bytes else {
                throw CheckpointError.outOfBounds(path, tensor: shown, detail: "data (offset \(r.rel), \(bytes) bytes) lies past the end of the file (\(file.bytes.count) bytes)")
            }
            guard Int(r.rel) % align == 0 else {
                throw CheckpointError.outOfBounds(path, tensor: shown, detail: "offset \(r.rel) is not aligned to \(align)")
            }
            guard index[r.name] == nil else {
                throw CheckpointError.invalid(path, detail: "tensor '\(shown)' appears twice")
            }
            index[r.name] = infos.count
            infos.append(GGUFTensorInfo(name: r.name, dims: r.dims, type: type, offset: dataStart + Int(r.rel), byteCount: bytes))
        }
        tensors = infos
        tensorIndex = index
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The raw (still quantized) bytes of a tensor, pointing into the map.
    public func rawBytes(_ info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[info.offset..<(info.offset + info.byteCount)])
    }

    /// Dequantizes a tensor to Float32 (row-major, `info.shape`).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensor(name) else { throw CheckpointError.missingTensor(path, tensor: name) }
        return try floats(info)
    }

    public func floats(_ info: GGUFTensorInfo) throws -> [Float] {
        guard info.type.canDequantize else {
            throw CheckpointError.unsupportedTensorType(path, tensor: printable(info.name), type: info.type.name)
        }
        let raw = rawBytes(info)
        return [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            dequantize(info.type, raw, into: buf)
            n = info.elementCount
        }
    }

    /// `general.alignment` (default 32): an integer power of two. Bounded so that rounding an
    /// offset up to it cannot overflow.
    static func alignment(_ value: GGUFValue?, path: String) throws -> Int {
        guard let value else { return 32 }
        let isInteger: Bool
        switch value {
        case .uint8, .int8, .uint16, .int16, .uint32, .int32, .uint64, .int64: isInteger = true
        default: isInteger = false
        }
        guard isInteger, let align = value.int else {
            throw CheckpointError.invalid(path, detail: "general.alignment \(value.summary) is not an integer")
        }
        guard align > 0, align <= 1 << 30, align & (align - 1) == 0 else {
            throw CheckpointError.invalid(path, detail: "general.alignment \(align) is not a power of two up to 2^30")
        }
        return align
    }

    // MARK: metadata parsing

    static func readString(_ c: inout ByteCursor, _ what: @autoclosure () -> String) throws -> String {
        let n = try c.read(UInt64.self, what())
        guard n <= UInt64(c.bytes.count) else { throw CheckpointError.truncated(c.path, what: what()) }
        let b = try c.readBytes(Int(n), what())
        return String(decoding: b, as: UTF8.self)
    }

    /// Bytes the smallest value of a GGUF value type takes (strings and arrays: their length
    /// field, plus the element type for arrays), nil for an unknown type.
    static func minimumEncodedSize(typeId: UInt32) -> Int? {
        switch typeId {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8, 10, 11, 12: return 8
        case 9: return 12
        default: return nil
        }
    }

    static func readValue(_ c: inout ByteCursor, typeId: UInt32, what: String, depth: Int) throws -> GGUFValue {
        switch typeId {
        case 0: return .uint8(try c.read(UInt8.self, what))
        case 1: return .int8(try c.read(Int8.self, what))
        case 2: return .uint16(try c.read(UInt16.self, what))
        case 3: return .int16(try c.read(Int16.self, what))
        case 4: return .uint32(try c.read(UInt32.self, what))
        case 5: return .int32(try c.read(Int32.self, what))
        case 6: return .float32(try c.readFloat(what))
        case 7:
            let b = try c.read(UInt8.self, what)
            guard b <= 1 else { throw CheckpointError.invalid(c.path, detail: "\(what): bool value \(b)") }
            return .bool(b == 1)
        case 8: return .string(try readString(&c, what))
        case 9:
            guard depth < 4 else { throw CheckpointError.invalid(c.path, detail: "\(what): arrays nested too deeply") }
            let elemType = try c.read(UInt32.self, what)
            guard let elementSize = minimumEncodedSize(typeId: elemType) else {
                throw CheckpointError.invalid(c.path, detail: "\(what): unknown value type \(elemType)")
            }
            let n = try c.read(UInt64.self, what)
            // A count whose smallest encoding exceeds the remaining bytes is corrupt: refuse it
            // before reserving memory for it.
            guard n <= UInt64(c.bytes.count - c.offset) / UInt64(elementSize) else {
                throw CheckpointError.truncated(c.path, what: what)
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(n))
            for _ in 0..<Int(n) { items.append(try readValue(&c, typeId: elemType, what: what, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try c.read(UInt64.self, what))
        case 11: return .int64(try c.read(Int64.self, what))
        case 12: return .float64(try c.readDouble(what))
        default: throw CheckpointError.invalid(c.path, detail: "\(what): unknown value type \(typeId)")
        }
    }
}
