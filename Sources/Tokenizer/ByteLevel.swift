/// GPT-2's reversible map between the 256 byte values and printable Unicode characters, in which
/// byte-level BPE vocabularies are written: printable Latin-1 bytes stand for themselves and the
/// other 68 bytes (controls, space, 0x7F-0xA0, 0xAD) take U+0100... in byte order, so that no token
/// text contains whitespace or control characters (space is "Ġ", newline is "Ċ").
enum ByteLevel {
    /// The character that stands for each byte.
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if standsForItself(UInt8(byte)) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `scalarForByte`, indexed by scalar value (all such scalars are below 0x144).
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in scalarForByte.enumerated() { table[Int(scalar)] = Int16(byte) }
        return table
    }()

    private static func standsForItself(_ b: UInt8) -> Bool {
        (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
    }

    /// UTF-8 of the character standing for `byte` (what a vocabulary stores for that byte).
    static func encodedUTF8(_ byte: UInt8) -> [UInt8] {
        Array(String(Character(Unicode.Scalar(scalarForByte[Int(byte)])!)).utf8)
    }

    /// The byte a character stands for, if it is in the byte alphabet.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = Int(scalar.value)
        return v < byteForScalar.count && byteForScalar[v] >= 0 ? UInt8(byteForScalar[v]) : nil
    }

    /// The raw bytes a token text stands for, or nil when the text contains a character outside
    /// the byte alphabet (special tokens such as "<|im_start|>" are plain ASCII and do decode).
    static func decode(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            guard let b = byte(for: scalar) else { return nil }
            bytes.append(b)
        }
        return bytes
    }
}
