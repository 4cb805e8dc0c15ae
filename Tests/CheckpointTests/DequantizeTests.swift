import XCTest
import Checkpoint

/// Every dequantizer on blocks assembled byte by byte. Two kinds of check per type:
/// - a literal block whose expected values were worked out by hand from ggml-common.h;
/// - random blocks: the test chooses the logical values (scales, mins, integer codes), packs
///   them as the format defines, and expects the format's formula, element by element.
/// Super-scales are powers of two, so every expected product is exact in Float32.
final class DequantizeTests: XCTestCase {
    // MARK: plain types

    func testF32CopiesBitPatterns() {
        let values: [Float] = [1.5, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, -3.25e38, 7]
        var b = Bytes()
        values.forEach { b.f32($0) }
        XCTAssertEqual(dequantized(.f32, b.data, count: values.count).map(\.bitPattern), values.map(\.bitPattern))
        var nan = Bytes()
        nan.u32(0x7fc0_1234)
        XCTAssertTrue(dequantized(.f32, nan.data, count: 1)[0].isNaN)
    }

    func testF16() {
        // 0x3c00 = 1; 0xc000 = -2; 0x3555 = 1 + 0x155/1024 times 2^-2; 0x0001 = 2^-24 (smallest
        // subnormal); 0x03ff = 1023 * 2^-24 (largest subnormal); 0x0400 = 2^-14; 0x7bff = 65504;
        // 0x8000 = -0; 0x7c00 / 0xfc00 = +-inf.
        let bits: [UInt16] = [0x3c00, 0xc000, 0x3555, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x8000, 0x7c00, 0xfc00]
        let third: Float = (1 + 341.0 / 1024) / 4
        let tiny: Float = 1.0 / 16_777_216
        let largestSubnormal: Float = 1023 * tiny, smallestNormal: Float = 1.0 / 16384
        let expected: [Float] = [1, -2, third, tiny, largestSubnormal, smallestNormal, 65504, -0.0, .infinity, -.infinity]
        var b = Bytes()
        bits.forEach { b.u16($0) }
        XCTAssertEqual(dequantized(.f16, b.data, count: bits.count).map(\.bitPattern), expected.map(\.bitPattern))
        var nan = Bytes()
        nan.u16(0x7e00)
        XCTAssertTrue(dequantized(.f16, nan.data, count: 1)[0].isNaN)
    }

    func testBF16() {
        // bf16 is the top half of a float: 0x3f80 = 1, 0xc0a0 = -5, 0x0001 = 2^-133 (subnormal).
        let bits: [UInt16] = [0x3f80, 0xc0a0, 0x0001, 0x7f80, 0x8000]
        let expected: [Float] = [1, -5, Float(sign: .plus, exponent: -133, significand: 1), .infinity, -0.0]
        var b = Bytes()
        bits.forEach { b.u16($0) }
        XCTAssertEqual(dequantized(.bf16, b.data, count: bits.count).map(\.bitPattern), expected.map(\.bitPattern))
    }

    // MARK: 32-element blocks

    func testQ4_0Literal() {
        // d = 0.5; qs[j] = j | (15 - j) << 4: x[j] = 0.5 (j - 8), x[j + 16] = 0.5 (7 - j).
        var b = Bytes()
        b.half(0.5)
        for j in 0..<16 { b.u8(UInt8(j | (15 - j) << 4)) }
        let low: [Float] = (0..<16).map { Float($0 - 8) * 0.5 }
        let high: [Float] = (0..<16).map { Float(7 - $0) * 0.5 }
        XCTAssertEqual(dequantized(.q4_0, b.data, count: 32), low + high)
    }

    func testQ4_1Literal() {
        // d = 0.25, m = -1.5, qs[j] = 0xf0 | (j % 16): x[j] = 0.25 j - 1.5, x[j + 16] = 0.25 * 15 - 1.5.
        var b = Bytes()
        b.half(0.25)
        b.half(-1.5)
        for j in 0..<16 { b.u8(UInt8(0xf0 | j)) }
        let low: [Float] = (0..<16).map { Float($0) * 0.25 - 1.5 }
        XCTAssertEqual(dequantized(.q4_1, b.data, count: 32), low + [Float](repeating: 2.25, count: 16))
    }

    func testQ5Literal() {
        // qh = 0x00010002 (bits 1 and 16), qs[1] = 0x3f, other qs 0.
        // Q5_0, d = 0.25: x1 = (15 | 16) - 16 = 15 -> 3.75; x17 = 3 - 16 -> -3.25; x16 = 16 - 16 -> 0;
        // every other element 0 - 16 -> -4.
        var q50 = Bytes()
        q50.half(0.25)
        q50.u32(0x0001_0002)
        q50.u8(0)
        q50.u8(0x3f)
        q50.zeros(14)
        var e50 = [Float](repeating: -4, count: 32)
        e50[1] = 3.75; e50[17] = -3.25; e50[16] = 0
        XCTAssertEqual(dequantized(.q5_0, q50.data, count: 32), e50)
        // Q5_1, d = 0.5, m = 1: x1 = 31 * 0.5 + 1 = 16.5, x17 = 3 * 0.5 + 1 = 2.5, x16 = 16 * 0.5 + 1 = 9, else 1.
        var q51 = Bytes()
        q51.half(0.5)
        q51.half(1)
        q51.data += q50.data[2...]
        var e51 = [Float](repeating: 1, count: 32)
        e51[1] = 16.5; e51[17] = 2.5; e51[16] = 9
        XCTAssertEqual(dequantized(.q5_1, q51.data, count: 32), e51)
    }

    func testQ8_0Literal() {
        // d = 2^-5; qs = -128, 127, -1, 0, then 28 x 3.
        var b = Bytes()
        b.half(0.03125)
        for q: Int8 in [-128, 127, -1, 0] { b.u8(UInt8(bitPattern: q)) }
        for _ in 0..<28 { b.u8(3) }
        let head: [Float] = [-4, 3.96875, -0.03125, 0]
        XCTAssertEqual(dequantized(.q8_0, b.data, count: 32), head + [Float](repeating: 0.09375, count: 28))
    }

    func testLegacyBlocksRandom() {
        var rng = TestLCG(1)
        check(.q4_0, &rng) { b, r in
            let d = Self.powerOfTwo(&r)
            let q = (0..<32).map { _ in r.below(16) }
            b.half(d)
            for j in 0..<16 { b.u8(UInt8(q[j] | q[j + 16] << 4)) }
            return q.map { d * Float($0 - 8) }
        }
        check(.q4_1, &rng) { b, r in
            let d = Self.powerOfTwo(&r), m = Float(r.below(64) - 32) / 4
            let q = (0..<32).map { _ in r.below(16) }
            b.half(d)
            b.half(m)
            for j in 0..<16 { b.u8(UInt8(q[j] | q[j + 16] << 4)) }
            return q.map { d * Float($0) + m }
        }
        check(.q5_0, &rng) { b, r in
            let d = Self.powerOfTwo(&r)
            let q = (0..<32).map { _ in r.below(32) }
            b.half(d)
            b.u32(Self.fifthBits(q))
            for j in 0..<16 { b.u8(UInt8(q[j] & 15 | (q[j + 16] & 15) << 4)) }
            return q.map { d * Float($0 - 16) }
        }
        check(.q5_1, &rng) { b, r in
            let d = Self.powerOfTwo(&r), m = Float(r.below(64) - 32) / 4
            let q = (0..<32).map { _ in r.below(32) }
            b.half(d)
            b.half(m)
            b.u32(Self.fifthBits(q))
            for j in 0..<16 { b.u8(UInt8(q[j] & 15 | (q[j + 16] & 15) << 4)) }
            return q.map { d * Float($0) + m }
        }
        check(.q8_0, &rng) { b, r in
            let d = Self.powerOfTwo(&r)
            let q = (0..<32).map { _ in r.below(256) - 128 }
            b.half(d)
            q.forEach { b.u8(UInt8(bitPattern: Int8($0))) }
            return q.map { d * Float($0) }
        }
    }

    // MARK: K-quants, literal blocks

    func testQ2_KLiteral() {
        // d = 0.5, dmin = 0.25. scales[s] = sc | m << 4. Element i = 128h + 32j + l reads
        // (qs[32h + l] >> 2j) & 3 with sub-block s = i / 16.
        var scales = [UInt8](repeating: 0, count: 16)
        scales[0] = 0x21; scales[5] = 0x3f; scales[6] = 0x12; scales[8] = 0x07
        var qs = [UInt8](repeating: 0, count: 64)
        qs[0] = 0xe4; qs[16] = 0x30; qs[32] = 0x01
        var b = Bytes()
        b.data += scales + qs
        b.half(0.5)
        b.half(0.25)
        var e = [Float](repeating: 0, count: 256)
        for i in 0..<16 { e[i] = -0.5 }       // s 0 (sc 1, m 2), q 0: -0.25 * 2
        for i in 80..<96 { e[i] = -0.75 }     // s 5 (sc 15, m 3), q 0
        e[80] = 21.75                         // qs[16] >> 4 = 3: 0.5 * 15 * 3 - 0.75
        for i in 96..<112 { e[i] = -0.25 }    // s 6 (sc 2, m 1), q 0
        e[96] = 2.75                          // qs[0] >> 6 = 3: 0.5 * 2 * 3 - 0.25
        e[128] = 3.5                          // s 8 (sc 7, m 0), qs[32] & 3 = 1
        assertSameValues(dequantized(.q2_K, b.data, count: 256), e, "Q2_K")
    }

    func testQ3_KLiteral() {
        // d = 0.5. hmask all set (so a zero low part means q = 0) except hmask[0] bit 0.
        // Sub-block 0: 6-bit scale 33 (low nibble 1 in scales[0], top bits 0b10 in scales[8]
        // bits 0-1) -> 1. Sub-block 13: 26 (low nibble 0xa in the high half of scales[5], top bits
        // 0b01 in scales[9] bits 6-7) -> -6. Every other scale 0 -> -32.
        // Element 0: low (qs[0] & 3) = 1, high bit clear -> q = 1 - 4 = -3 -> 0.5 * 1 * -3 = -1.5.
        // Element 213 = 128 + 64 + 21 (h 1, j 2, l 21): low (qs[53] >> 4) & 3 = 3, hmask[21] bit 6
        // set -> q = 3 -> 0.5 * -6 * 3 = -9.
        var hmask = [UInt8](repeating: 0xff, count: 32)
        hmask[0] = 0xfe
        var qs = [UInt8](repeating: 0, count: 64)
        qs[0] = 0x01; qs[53] = 0x30
        var scales = [UInt8](repeating: 0, count: 12)
        scales[0] = 0x01; scales[8] = 0x02; scales[5] = 0xa0; scales[9] = 0x40
        var b = Bytes()
        b.data += hmask + qs + scales
        b.half(0.5)
        var e = [Float](repeating: 0, count: 256)
        e[0] = -1.5
        e[213] = -9
        assertSameValues(dequantized(.q3_K, b.data, count: 256), e, "Q3_K")
    }

    /// Scale bytes shared by the Q4_K and Q5_K literal tests, decoded by hand
    /// (get_scale_min_k4): j < 4: sc = b[j] & 63, m = b[j + 4] & 63;
    /// j >= 4: sc = (b[j + 4] & 15) | (b[j - 4] >> 6) << 4, m = (b[j + 4] >> 4) | (b[j] >> 6) << 4.
    /// sc = 1, 2, 3, 4, 49, 19, 5, 7; m = 5, 6, 7, 8, 34, 4, 6, 24.
    static let kScaleBytes: [UInt8] = [0xc1, 0x42, 0x03, 0x04, 0x85, 0x06, 0x07, 0x48, 0x21, 0x43, 0x65, 0x87]

    func testQ4_KLiteral() {
        // d = 0.5, dmin = 0.25, every qs byte 0x21: even sub-blocks read nibble 1, odd ones 2.
        // x = 0.5 sc q - 0.25 m per sub-block of 32.
        var b = Bytes()
        b.half(0.5)
        b.half(0.25)
        b.data += Self.kScaleBytes + [UInt8](repeating: 0x21, count: 128)
        let perSubBlock: [Float] = [0.5 - 1.25, 2 - 1.5, 1.5 - 1.75, 4 - 2, 24.5 - 8.5, 19 - 1, 2.5 - 1.5, 7 - 6]
        assertSameValues(dequantized(.q4_K, b.data, count: 256), perSubBlock.flatMap { Array(repeating: $0, count: 32) }, "Q4_K")
    }

    func testQ5_KLiteral() {
        // As Q4_K, plus qh[l] = 0x81: sub-blocks 0 and 7 add 16 to their code.
        // Sub-block 0: 0.5 * 1 * 17 - 1.25 = 7.25; sub-block 7: 0.5 * 7 * 18 - 6 = 57.
        var b = Bytes()
        b.half(0.5)
        b.half(0.25)
        b.data += Self.kScaleBytes + [UInt8](repeating: 0x81, count: 32) + [UInt8](repeating: 0x21, count: 128)
        let perSubBlock: [Float] = [7.25, 0.5, -0.25, 2, 16, 18, 1, 57]
        assertSameValues(dequantized(.q5_K, b.data, count: 256), perSubBlock.flatMap { Array(repeating: $0, count: 32) }, "Q5_K")
    }

    func testQ6_KLiteral() {
        // d = 0.5; scales[0] = 1, scales[5] = 2, scales[15] = -3, others 0. With ql = qh = 0 every
        // code is 0 - 32: x = 0.5 * s * -32 = -16 s.
        // Element 85 = 64 + 21 (h 0, k 2, l 21): ql[21] high nibble 7, qh[21] bits 4-5 = 2
        // -> 7 | 32 = 39 -> 7 -> 0.5 * 2 * 7 = 7.
        // Element 255 = 128 + 96 + 31 (h 1, k 3, l 31): ql[64 + 32 + 31] high nibble 15, qh[32 + 31]
        // bits 6-7 = 3 -> 63 -> 31 -> 0.5 * -3 * 31 = -46.5.
        var ql = [UInt8](repeating: 0, count: 128)
        ql[21] = 0x70; ql[127] = 0xf0
        var qh = [UInt8](repeating: 0, count: 64)
        qh[21] = 0x20; qh[63] = 0xc0
        var scales = [Int8](repeating: 0, count: 16)
        scales[0] = 1; scales[5] = 2; scales[15] = -3
        var b = Bytes()
        b.data += ql + qh + scales.map { UInt8(bitPattern: $0) }
        b.half(0.5)
        var e = [Float](repeating: 0, count: 256)
        for i in 0..<16 { e[i] = -16 }
        for i in 80..<96 { e[i] = -32 }
        for i in 240..<256 { e[i] = 48 }
        e[85] = 7
        e[255] = -46.5
        assertSameValues(dequantized(.q6_K, b.data, count: 256), e, "Q6_K")
    }

    // MARK: K-quants, random blocks packed from their definition

    func testKQuantsRandom() {
        var rng = TestLCG(2)
        check(.q2_K, &rng) { b, r in
            let d = Self.powerOfTwo(&r), dmin = Self.powerOfTwo(&r)
            let sc = (0..<16).map { _ in r.below(16) }, m = (0..<16).map { _ in r.below(16) }
            let q = (0..<256).map { _ in r.below(4) }
            var qs = [UInt8](repeating: 0, count: 64)
            for i in 0..<256 { qs[32 * (i / 128) + i % 32] |= UInt8(q[i] << (2 * ((i % 128) / 32))) }
            b.data += (0..<16).map { UInt8(sc[$0] | m[$0] << 4) } + qs
            b.half(d)
            b.half(dmin)
            return (0..<256).map { d * Float(sc[$0 / 16]) * Float(q[$0]) - dmin * Float(m[$0 / 16]) }
        }
        check(.q3_K, &rng) { b, r in
            let d = Self.powerOfTwo(&r)
            let sc = (0..<16).map { _ in r.below(64) }       // stored; the scale is sc - 32
            let q = (0..<256).map { _ in r.below(8) - 4 }    // -4 ... 3
            var hmask = [UInt8](repeating: 0, count: 32), qs = [UInt8](repeating: 0, count: 64)
            for i in 0..<256 {
                let low = q[i] >= 0 ? q[i] : q[i] + 4, high = q[i] >= 0 ? 1 : 0
                qs[32 * (i / 128) + i % 32] |= UInt8(low << (2 * ((i % 128) / 32)))
                hmask[i % 32] |= UInt8(high << (i / 32))
            }
            var scales = [UInt8](repeating: 0, count: 12)
            for k in 0..<16 {
                scales[k % 8] |= UInt8((sc[k] & 15) << (k < 8 ? 0 : 4))
                scales[8 + k % 4] |= UInt8((sc[k] >> 4) << (2 * (k / 4)))
            }
            b.data += hmask + qs + scales
            b.half(d)
            return (0..<256).map { d * Float(sc[$0 / 16] - 32) * Float(q[$0]) }
        }
        check(.q4_K, &rng) { b, r in
            let d = Self.powerOfTwo(&r), dmin = Self.powerOfTwo(&r)
            let sc = (0..<8).map { _ in r.below(64) }, m = (0..<8).map { _ in r.below(64) }
            let q = (0..<256).map { _ in r.below(16) }
            var qs = [UInt8](repeating: 0, count: 128)
            for i in 0..<256 { qs[32 * (i / 64) + i % 32] |= UInt8(q[i] << (4 * ((i / 32) % 2))) }
            b.half(d)
            b.half(dmin)
            b.data += Self.packKScales(sc, m) + qs
            return (0..<256).map { d * Float(sc[$0 / 32]) * Float(q[$0]) - dmin * Float(m[$0 / 32]) }
        }
        check(.q5_K, &rng) { b, r in
            let d = Self.powerOfTwo(&r), dmin = Self.powerOfTwo(&r)
            let sc = (0..<8).map { _ in r.below(64) }, m = (0..<8).map { _ in r.below(64) }
            let q = (0..<256).map { _ in r.below(32) }
            var qh = [UInt8](repeating: 0, count: 32), qs = [UInt8](repeating: 0, count: 128)
            for i in 0..<256 {
                qs[32 * (i / 64) + i % 32] |= UInt8((q[i] & 15) << (4 * ((i / 32) % 2)))
                qh[i % 32] |= UInt8((q[i] >> 4) << (i / 32))
            }
            b.half(d)
            b.half(dmin)
            b.data += Self.packKScales(sc, m) + qh + qs
            return (0..<256).map { d * Float(sc[$0 / 32]) * Float(q[$0]) - dmin * Float(m[$0 / 32]) }
        }
        check(.q6_K, &rng) { b, r in
            let d = Self.powerOfTwo(&r)
            let sc = (0..<16).map { _ in r.below(256) - 128 }
            let q = (0..<256).map { _ in r.below(64) }       // stored; the code is q - 32
            var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
            for i in 0..<256 {
                let h = i / 128, k = (i % 128) / 32, l = i % 32
                ql[64 * h + 32 * (k % 2) + l] |= UInt8((q[i] & 15) << (4 * (k / 2)))
                qh[32 * h + l] |= UInt8((q[i] >> 4) << (2 * k))
            }
            b.data += ql + qh + sc.map { UInt8(bitPattern: Int8($0)) }
            b.half(d)
            return (0..<256).map { d * Float(sc[$0 / 16]) * Float(q[$0] - 32) }
        }
    }

    // MARK: helpers

    /// Three consecutive random blocks of `type`, each built by `block` (which appends the
    /// block's bytes and returns its expected values), dequantized in one call.
    private func check(_ type: GGMLType, _ rng: inout TestLCG, file: StaticString = #filePath, line: UInt = #line,
                       _ block: (inout Bytes, inout TestLCG) -> [Float]) {
        var b = Bytes()
        var expected: [Float] = []
        for _ in 0..<3 {
            expected += block(&b, &rng)
            XCTAssertEqual(b.data.count, type.typeSize * expected.count / type.blockSize, "\(type.name) block size", file: file, line: line)
        }
        assertSameValues(dequantized(type, b.data, count: expected.count), expected, type.name, file: file, line: line)
    }

    /// 2^k for k in -6 ... 1, possibly negated (a super-scale whose products stay exact).
    static func powerOfTwo(_ r: inout TestLCG) -> Float {
        let v = Float(sign: .plus, exponent: r.below(8) - 6, significand: 1)
        return r.below(4) == 0 ? -v : v
    }

    /// Bit i = bit 4 of code i (Q5_0/Q5_1's qh).
    static func fifthBits(_ q: [Int]) -> UInt32 {
        (0..<32).reduce(0) { $0 | UInt32((q[$1] >> 4) & 1) << UInt32($1) }
    }

    /// Packs eight 6-bit scales and mins into Q4_K/Q5_K's 12 bytes: bytes 0-3 hold sc[0-3] and
    /// the top bits of sc[4-7]; bytes 4-7 hold m[0-3] and the top bits of m[4-7]; bytes 8-11 hold
    /// the low nibbles of sc[4-7] (low) and m[4-7] (high).
    static func packKScales(_ sc: [Int], _ m: [Int]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            out[j] = UInt8(sc[j] | (sc[j + 4] >> 4) << 6)
            out[j + 4] = UInt8(m[j] | (m[j + 4] >> 4) << 6)
            out[j + 8] = UInt8((sc[j + 4] & 15) | (m[j + 4] & 15) << 4)
        }
        return out
    }
}
