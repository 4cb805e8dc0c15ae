/// A JSON document that keeps object keys in file order and numbers as their literal text, so
/// that a config.json or tokenizer.json can be read, edited and written back without reordering
/// keys or rounding numbers (`1e-05` stays `1e-05`; a 64-bit offset stays exact).
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's literal text, already checked against the JSON number grammar.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; a key given twice keeps both (lookups find the last, as
    /// Python's json module does).
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y || (Double(x) != nil && Double(x) == Double(y))
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    // MARK: building

    public static func int(_ v: Int) -> JSONValue { .number(String(v)) }

    /// Shortest text that reads back as the same Float (`1e-05`, `100000.0`); non-finite
    /// values have no JSON spelling and become null.
    public static func float(_ v: Float) -> JSONValue { v.isFinite ? .number(v.description) : .null }

    public static func double(_ v: Double) -> JSONValue { v.isFinite ? .number(v.description) : .null }

    // MARK: reading

    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    public var isNull: Bool { if case .null = self { return true }; return false }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var members: [(String, JSONValue)]? { if case .object(let m) = self { return m }; return nil }
    public var double: Double? { if case .number(let n) = self { return Double(n) }; return nil }
    public var float: Float? { if case .number(let n) = self { return Float(n) }; return nil }

    /// The value as an Int when it is an integral number in range (`2`, `2.0`, `2e0`).
    public var int: Int? {
        guard case .number(let n) = self else { return nil }
        if let i = Int(n) { return i }
        guard let d = Double(n), d == d.rounded(), abs(d) < 9.007_199_254_740_992e15 else { return nil }
        return Int(d)
    }

    /// An object with `key` set to `value`, replacing an existing member in place or appending.
    public func setting(_ key: String, _ value: JSONValue) -> JSONValue {
        guard case .object(var m) = self else { return self }
        if let i = m.lastIndex(where: { $0.0 == key }) { m[i].1 = value } else { m.append((key, value)) }
        return .object(m)
    }
}

// MARK: - Writing

extension JSONValue {
    /// Compact JSON (`{"a":1,"b":[2,3]}`) when `indent` is nil, else one member per line.
    public func serialized(indent: Int? = 2) -> String {
        var out = ""
        write(to: &out, indent: indent, level: 0)
        if indent != nil { out += "\n" }
        return out
    }

    private func write(to out: inout String, indent: Int?, level: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n
        case .string(let s): out += JSONValue.quoted(s)
        case .array(let items):
            writeContainer(to: &out, open: "[", close: "]", count: items.count, indent: indent, level: level) { i, out in
                items[i].write(to: &out, indent: indent, level: level + 1)
            }
        case .object(let members):
            writeContainer(to: &out, open: "{", close: "}", count: members.count, indent: indent, level: level) { i, out in
                out += JSONValue.quoted(members[i].0)
                out += indent == nil ? ":" : ": "
                members[i].1.write(to: &out, indent: indent, level: level + 1)
            }
        }
    }

    private func writeContainer(to out: inout String, open: String, close: String, count: Int, indent: Int?,
                                level: Int, item: (Int, inout String) -> Void) {
        out += open
        guard count > 0 else { out += close; return }
        let inner = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        for i in 0..<count {
            if i > 0 { out += "," }
            out += inner
            item(i, &out)
        }
        out += indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        out += close
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped, everything
    /// else (including non-ASCII) written as UTF-8, as Python's `ensure_ascii=False` does.
    public static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - Parsing

/// Why a JSON text was rejected, with the byte offset where parsing stopped.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

extension JSONValue {
    /// Parses one JSON value (RFC 8259) from UTF-8 bytes; trailing non-space bytes are an error.
    public init(parsing bytes: UnsafeRawBufferPointer) throws {
        var p = JSONParser(bytes: bytes.bindMemory(to: UInt8.self))
        p.skipSpace()
        self = try p.value(depth: 0)
        p.skipSpace()
        guard p.at >= p.bytes.count else { throw p.fail("unexpected data after the value") }
    }

    public init(parsing bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try JSONValue(parsing: $0) }
    }

    public init(parsing text: String) throws {
        try self.init(parsing: Array(text.utf8))
    }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var at = 0
    static let maxDepth = 512

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: at, reason: reason) }

    var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

    mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { at += 1 }
    }

    mutating func expect(_ literal: String, _ v: JSONValue) throws -> JSONValue {
        for b in literal.utf8 {
            guard peek == b else { throw fail("expected '\(literal)'") }
            at += 1
        }
        return v
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nested more than \(Self.maxDepth) deep") }
        guard let c = peek else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try expect("true", .bool(true))
        case UInt8(ascii: "f"): return try expect("false", .bool(false))
        case UInt8(ascii: "n"): return try expect("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw fail("unexpected character '\(Character(UnicodeScalar(c)))'")
        }
    }

    mutating func object(depth: Int) throws -> JSONValue {
        at += 1
        var members: [(String, JSONValue)] = []
        skipSpace()
        if peek == UInt8(ascii: "}") { at += 1; return .object(members) }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let key = try string()
            skipSpace()
            guard peek == UInt8(ascii: ":") else { throw fail("expected ':' after member name") }
            at += 1
            skipSpace()
            members.append((key, try value(depth: depth + 1)))
            skipSpace()
            guard let c = peek else { throw fail("unterminated object") }
            at += 1
            if c == UInt8(ascii: "}") { return .object(members) }
            guard c == UInt8(ascii: ",") else { at -= 1; throw fail("expected ',' or '}'") }
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        at += 1
        var items: [JSONValue] = []
        skipSpace()
        if peek == UInt8(ascii: "]") { at += 1; return .array(items) }
        while true {
            skipSpace()
            items.append(try value(depth: depth + 1))
            skipSpace()
            guard let c = peek else { throw fail("unterminated array") }
            at += 1
            if c == UInt8(ascii: "]") { return .array(items) }
            guard c == UInt8(ascii: ",") else { at -= 1; throw fail("expected ',' or ']'") }
        }
    }

    /// number = [-] int [frac] [exp]; returned as its literal text.
    mutating func number() throws -> String {
        let start = at
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.at
            while let c = p.peek, c >= 0x30, c <= 0x39 { p.at += 1 }
            return p.at - s
        }
        if peek == UInt8(ascii: "-") { at += 1 }
        if peek == UInt8(ascii: "0") {
            at += 1
        } else if digits(&self) == 0 {
            throw fail("malformed number")
        }
        if peek == UInt8(ascii: ".") {
            at += 1
            guard digits(&self) > 0 else { throw fail("malformed number: no digits after '.'") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            at += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
            guard digits(&self) > 0 else { throw fail("malformed number: no digits in exponent") }
        }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
    }

    mutating func string() throws -> String {
        at += 1
        var out: [UInt8] = []
        var runStart = at
        while true {
            guard let c = peek else { throw fail("unterminated string") }
            if c == UInt8(ascii: "\"") {
                out.append(contentsOf: bytes[runStart..<at])
                at += 1
                break
            }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { at += 1; continue }
            out.append(contentsOf: bytes[runStart..<at])
            at += 1
            try escape(into: &out)
            runStart = at
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    mutating func escape(into out: inout [UInt8]) throws {
        guard let e = peek else { throw fail("unterminated escape") }
        at += 1
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            var code = try hex4()
            if (0xD800..<0xDC00).contains(code) {
                // A high surrogate must be followed by \u and a low surrogate (UTF-16 pair).
                guard peek == UInt8(ascii: "\\") else { throw fail("unpaired surrogate") }
                at += 1
                guard peek == UInt8(ascii: "u") else { throw fail("unpaired surrogate") }
                at += 1
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(code) {
                throw fail("unpaired surrogate")
            }
            guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point") }
            out.append(contentsOf: Array(String(Character(scalar)).utf8))
        default: throw fail("invalid escape '\\\(Character(UnicodeScalar(e)))'")
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard bytes.count - at >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[at]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: throw fail("bad hex digit in \\u escape")
            }
            v = v << 4 | UInt32(d)
            at += 1
        }
        return v
    }
}
