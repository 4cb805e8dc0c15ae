import XCTest
import Checkpoint

/// binary16 and bfloat16 conversions. Swift's own Float16 (IEEE, round-to-nearest-even) is the
/// independent reference for binary16; bfloat16 cases are worked out by hand.
final class HalfTests: XCTestCase {
    func testHalfToFloatMatchesFloat16ForEveryPattern() {
        for bits in 0...UInt16.max {
            let ours = halfToFloat(bits), reference = Float(Float16(bitPattern: bits))
            if reference.isNaN {
                XCTAssertTrue(ours.isNaN, "0x\(String(bits, radix: 16))")
            } else {
                XCTAssertEqual(ours.bitPattern, reference.bitPattern, "0x\(String(bits, radix: 16))")
            }
        }
    }

    func testFloatToHalfRoundTripsEveryHalf() {
        for bits in 0...UInt16.max where !Float16(bitPattern: bits).isNaN {
            XCTAssertEqual(floatToHalf(Float(Float16(bitPattern: bits))), bits)
        }
    }

    func testFloatToHalfRoundsToNearestEven() {
        let tiny = Float(sign: .plus, exponent: -24, significand: 1)   // smallest half subnormal
        // Hand-worked cases: value -> expected bits.
        let cases: [(Float, UInt16)] = [
            (1 + Float(sign: .plus, exponent: -11, significand: 1), 0x3c00),      // tie between 0x3c00 and 0x3c01: even
            (1 + 3 * Float(sign: .plus, exponent: -11, significand: 1), 0x3c02),  // tie between 0x3c01 and 0x3c02: even
            (1 + Float(sign: .plus, exponent: -11, significand: 1.01), 0x3c01),   // just above the tie
            (65504, 0x7bff), (65519, 0x7bff),                                     // largest finite, and below the tie
            (65520, 0x7c00),                                                      // tie with 65536 rounds to even: inf
            (1e6, 0x7c00), (-1e6, 0xfc00), (.infinity, 0x7c00), (-.infinity, 0xfc00),
            (tiny, 0x0001), (tiny / 2, 0x0000),                                   // half the smallest subnormal: tie to 0
            (tiny * 0.5000001, 0x0001), (tiny * 1.5, 0x0002),                     // 1.5 ulp: tie to even 2
            (tiny * 2.5, 0x0002), (tiny / 4, 0x0000), (-tiny / 4, 0x8000),
            (Float(sign: .plus, exponent: -14, significand: 1), 0x0400),          // smallest normal
            (1023.5 * tiny, 0x0400),                                              // largest subnormal + 1/2 ulp: tie -> even 0x400
            (-0.0, 0x8000), (0.1, 0x2e66), (-2.5, 0xc100),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(floatToHalf(value), expected, "\(value)")
        }
        let nan = floatToHalf(.nan)
        XCTAssertEqual(nan & 0x7c00, 0x7c00)
        XCTAssertNotEqual(nan & 0x03ff, 0, "NaN must stay NaN")
    }

    func testFloatToHalfMatchesFloat16OnManyFloats() {
        // Every float exponent from well below the subnormal range to above overflow, random mantissas,
        // plus the exact midpoints between neighbouring halves.
        var rng = TestLCG(3)
        for _ in 0..<200_000 {
            let exponent = rng.below(50) - 30
            let mantissa = UInt32(rng.next() & 0x7f_ffff)
            let sign: UInt32 = rng.below(2) == 0 ? 0 : 0x8000_0000
            let f = Float(bitPattern: sign | UInt32(exponent + 127) << 23 | mantissa)
            XCTAssertEqual(floatToHalf(f), Float16(f).bitPattern, "\(f)")
        }
        for bits in UInt16(0)..<0x7bff {
            let lo = Float(Float16(bitPattern: bits)), hi = Float(Float16(bitPattern: bits + 1))
            let mid = (lo + hi) / 2   // exact in Float32
            XCTAssertEqual(floatToHalf(mid), Float16(mid).bitPattern, "midpoint after 0x\(String(bits, radix: 16))")
        }
    }

    func testBF16() {
        XCTAssertEqual(bf16ToFloat(0x3f80), 1)
        XCTAssertEqual(bf16ToFloat(0xc0a0), -5)
        XCTAssertEqual(bf16ToFloat(0x0001), Float(sign: .plus, exponent: -133, significand: 1))
        XCTAssertEqual(bf16ToFloat(0xff80), -.infinity)
        let ulp = Float(sign: .plus, exponent: -7, significand: 1)   // bf16 spacing just above 1
        let cases: [(Float, UInt16)] = [
            (1, 0x3f80), (1 + ulp / 2, 0x3f80),               // tie: even
            (1 + 3 * ulp / 2, 0x3f82),                        // tie between 0x3f81 and 0x3f82: even
            (1 + ulp / 2 + ulp / 64, 0x3f81),                 // just above the tie
            (-5, 0xc0a0), (-0.0, 0x8000),
            (.greatestFiniteMagnitude, 0x7f80),               // rounds up into inf
            (.infinity, 0x7f80), (-.infinity, 0xff80),
            (Float(sign: .plus, exponent: -133, significand: 1), 0x0001),   // subnormal
        ]
        for (value, expected) in cases { XCTAssertEqual(floatToBF16(value), expected, "\(value)") }
        let nan = floatToBF16(Float(bitPattern: 0x7f80_0001))   // signalling NaN whose payload is all in the low half
        XCTAssertTrue(bf16ToFloat(nan).isNaN)
        for bits in 0...UInt16.max where !bf16ToFloat(bits).isNaN {
            XCTAssertEqual(floatToBF16(bf16ToFloat(bits)), bits)
        }
    }
}
