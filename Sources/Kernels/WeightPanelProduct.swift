#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// y [tokens × rows] = x [tokens × width] · Wᵀ with W handed over in *weight panels*: 32 rows
/// (two 16-lane vectors) by a run of columns, stored column by column ([column][32 rows]), so one
/// column of a panel is two vector loads. Each panel's rows are produced (dequantized) once per
/// product and then multiplied with every token.
///
/// Why not dequantized row tiles + OpenBLAS sgemm: OpenBLAS runs its Haswell kernels here
/// (256-bit FMAs; see `BLASCore`), repacks both operands of every tile, and at 128 tokens a
/// prefill spent 68 % of its CPU time in `sgemm_kernel_HASWELL` and 13 % in its copies. This
/// micro-kernel is 512-bit FMAs straight from the panel the dequantizer wrote and from the
/// activation rows as they are (broadcasts), so nothing is repacked.
///
/// Every output is the sum over its columns in order, column block after column block,
/// whatever the thread count or the tiling: the same bits at any thread count.
enum WeightPanels {
    /// Rows of a panel.
    static let rows = 32
    /// Tokens of one micro-kernel call: 12 × 2 accumulators + 2 weight vectors + a broadcast
    /// fill 27 of the 32 vector registers.
    static let tokens = 12
    /// Columns of a panel block at most: 32 rows × 256 × 4 bytes = 32 KB, within the 48 KB L1
    /// while every token block runs over it (128 and 1024 measured the same at 576 wide).
    static let maximumDepth = 256
    /// Panels that take a column block in turn (each dequantized into the same L1-resident
    /// buffer, then multiplied with every token): one column block of the activations
    /// (tokens × depth) serves four panels from L2 before the next block is read.
    static let tilePanels = 4

    /// The column blocks of a product `width` wide: as even as multiples of `step` allow (the
    /// dequantizer fills whole groups), none above `maximumDepth` unless `step` is.
    static func columnBlocks(width: Int, step: Int) -> [Range<Int>] {
        let count = max(1, (width + maximumDepth - 1) / maximumDepth)
        let depth = max(step, ((width + count - 1) / count + step - 1) / step * step)
        return stride(from: 0, to: width, by: depth).map { $0 ..< min(width, $0 + depth) }
    }
}

/// y (see `WeightPanels`) for weights whose panels `fill(panel, columns, out)` writes: rows
/// 32·panel ..< 32·panel + 32 (anything past `rows` is never stored) of columns `columns` into
/// out [columns.count × 32]; the column blocks are whole multiples of `columnStep` (a step of
/// `width` asks for whole rows). y[t, r] = scales[r] · Σ_k x[t, k] · W[r, k] (no scales: 1): a
/// dequantizer leaves the row scales out and they are applied once per output.
func multiplyByWeightPanels(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int, rows: Int,
                            width: Int, columnStep: Int, scales: UnsafePointer<Float>?,
                            fill: (Int, Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
    guard tokens > 0, rows > 0 else { return }
    let panels = (rows + WeightPanels.rows - 1) / WeightPanels.rows
    let blocks = WeightPanels.columnBlocks(width: width, step: columnStep)
    let depth = blocks[0].count
    let panelFloats = depth * WeightPanels.rows
    // Blocks of 12 tokens, or of 8 when they leave less padding (128 or 512 tokens: none; 5:
    // 3 rows, not 7). A last partial block is read from a copy padded with zero rows, so the
    // micro-kernel always reads evenly spaced rows.
    func computedTokens(_ block: Int) -> Int { (tokens + block - 1) / block * block }
    let block = computedTokens(8) < computedTokens(WeightPanels.tokens) ? 8 : WeightPanels.tokens
    let fullTokens = tokens / block * block
    let padded = UnsafeMutablePointer<Float>.allocate(capacity: fullTokens < tokens ? block * width : 0)
    defer { padded.deallocate() }
    if fullTokens < tokens {
        padded.update(from: x + fullTokens * width, count: (tokens - fullTokens) * width)
        (padded + (tokens - fullTokens) * width).initialize(repeating: 0, count: (block - tokens + fullTokens) * width)
    }
    parallelChunks(panels) { firstPanel, endPanel in
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: panelFloats)
        let spill = UnsafeMutablePointer<Float>.allocate(capacity: WeightPanels.tokens * WeightPanels.rows)
        defer { buffer.deallocate(); spill.deallocate() }
        for tileStart in stride(from: firstPanel, to: endPanel, by: WeightPanels.tilePanels) {
            let tile = tileStart ..< min(endPanel, tileStart + WeightPanels.tilePanels)
            for (b, columns) in blocks.enumerated() {
                for p in tile {
                    fill(p, columns, buffer)
                    let firstRow = p * WeightPanels.rows
                    for t in stride(from: 0, to: tokens, by: block) {
                        let rowsOfX = t < fullTokens ? x + t * width : UnsafePointer(padded)
                        let arguments = PanelKernelArguments(
                            x: rowsOfX + columns.lowerBound, xStride: width, tokens: min(block, tokens - t), panel: buffer,
                            depth: columns.count, y: y + t * rows + firstRow, yStride: rows,
                            rows: min(WeightPanels.rows, rows - firstRow), accumulate: b > 0,
                            scales: b == blocks.count - 1 ? scales.map { $0 + firstRow } : nil, spill: spill)
                        if block == 8 {
                            panelMicroKernel(EightTokens.self, arguments)
                        } else {
                            panelMicroKernel(TwelveTokens.self, arguments)
                        }
                    }
                }
            }
        }
    }
}

/// The token count of a micro-kernel, as a type: each count gets its own specialised (never
/// inlined) copy of the kernel, with the accumulators past the count folded away. (Inlining
/// several counts into one function instead made the compiler stop inlining the vector loads:
/// 2.3x slower.)
private protocol TokenBlock { static var count: Int { get } }
private enum TwelveTokens: TokenBlock { static var count: Int { 12 } }
private enum EightTokens: TokenBlock { static var count: Int { 8 } }

/// What one micro-kernel call works on (see `panelMicroKernel`).
private struct PanelKernelArguments {
    let x: UnsafePointer<Float>, xStride: Int, tokens: Int, panel: UnsafePointer<Float>, depth: Int
    let y: UnsafeMutablePointer<Float>, yStride: Int, rows: Int, accumulate: Bool
    let scales: UnsafePointer<Float>?, spill: UnsafeMutablePointer<Float>
}

/// y[t, 0..<rows] (+)= Σ_k x[t, k] · panel[k, 0..<rows] for t < tokens ≤ B.count (12 or 8),
/// rows ≤ 32, then × scales[0..<rows] when given. x holds B.count rows `xStride` apart whatever
/// `tokens` (the caller pads a last partial block): three row pointers, the stride and three
/// times it address all twelve, so nothing spills from the general registers inside the loop.
/// `spill` [12 × 32] takes the sums of a partial tile.
@inline(never)
private func panelMicroKernel<B: TokenBlock>(_: B.Type, _ arguments: PanelKernelArguments) {
    let (x, xStride, tokens, panel, depth) = (arguments.x, arguments.xStride, arguments.tokens, arguments.panel, arguments.depth)
    let (y, yStride, rows, accumulate) = (arguments.y, arguments.yStride, arguments.rows, arguments.accumulate)
    let (scales, spill, blockTokens) = (arguments.scales, arguments.spill, B.count)
    typealias V = SIMD16<Float>
    var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V(), a8 = V(), a9 = V(), a10 = V(), a11 = V()
    var b0 = V(), b1 = V(), b2 = V(), b3 = V(), b4 = V(), b5 = V(), b6 = V(), b7 = V(), b8 = V(), b9 = V(), b10 = V(), b11 = V()
    var w = panel
    var p0 = x, p4 = x + 4 * xStride, p8 = x + (blockTokens > 8 ? 8 * xStride : 0)
    let s1 = xStride, s2 = 2 * xStride, s3 = 3 * xStride
    for _ in 0..<depth {
        let low = loadVector(w), high = loadVector(w + 16)
        w += WeightPanels.rows
        var s = V(repeating: p0[0]); a0.addProduct(s, low); b0.addProduct(s, high)
        s = V(repeating: p0[s1]); a1.addProduct(s, low); b1.addProduct(s, high)
        s = V(repeating: p0[s2]); a2.addProduct(s, low); b2.addProduct(s, high)
        s = V(repeating: p0[s3]); a3.addProduct(s, low); b3.addProduct(s, high)
        s = V(repeating: p4[0]); a4.addProduct(s, low); b4.addProduct(s, high)
        s = V(repeating: p4[s1]); a5.addProduct(s, low); b5.addProduct(s, high)
        s = V(repeating: p4[s2]); a6.addProduct(s, low); b6.addProduct(s, high)
        s = V(repeating: p4[s3]); a7.addProduct(s, low); b7.addProduct(s, high)
        if blockTokens > 8 {
            s = V(repeating: p8[0]); a8.addProduct(s, low); b8.addProduct(s, high)
            s = V(repeating: p8[s1]); a9.addProduct(s, low); b9.addProduct(s, high)
            s = V(repeating: p8[s2]); a10.addProduct(s, low); b10.addProduct(s, high)
            s = V(repeating: p8[s3]); a11.addProduct(s, low); b11.addProduct(s, high)
        }
        p0 += 1
        p4 += 1
        p8 += 1
    }
    let full = tokens == blockTokens && rows == WeightPanels.rows
    let scaleLow = scales.map { loadVector($0) } ?? V(repeating: 1), scaleHigh = scales.map { loadVector($0 + 16) } ?? V(repeating: 1)
    // A full tile goes straight to y; a partial one through `spill` (stride 32), merged below.
    @inline(__always) func finish(_ i: Int, _ low: V, _ high: V) {
        guard i < blockTokens else { return }
        if full {
            let out = y + i * yStride
            var l = low, h = high
            if accumulate { l += loadVector(out); h += loadVector(out + 16) }
            if scales != nil { l *= scaleLow; h *= scaleHigh }
            storeVector(l, out)
            storeVector(h, out + 16)
        } else if i < tokens {
            storeVector(low, spill + i * WeightPanels.rows)
            storeVector(high, spill + i * WeightPanels.rows + 16)
        }
    }
    finish(0, a0, b0); finish(1, a1, b1); finish(2, a2, b2); finish(3, a3, b3)
    finish(4, a4, b4); finish(5, a5, b5); finish(6, a6, b6); finish(7, a7, b7)
    finish(8, a8, b8); finish(9, a9, b9); finish(10, a10, b10); finish(11, a11, b11)
    if full { return }
    for i in 0..<tokens {
        for r in 0..<rows {
            var v = spill[i * WeightPanels.rows + r]
            if accumulate { v += y[i * yStride + r] }
            if let scales { v *= scales[r] }
            y[i * yStride + r] = v
        }
    }
}

extension SIMD16 where Scalar == Float {
    /// self += a · b, one fused multiply-add per lane.
    @inline(__always)
    mutating func addProduct(_ a: SIMD16<Float>, _ b: SIMD16<Float>) {
        #if arch(x86_64)
        self = _mm512_fmadd_ps(a, b, self)
        #else
        self = addingProduct(a, b)
        #endif
    }
}

/// Sixteen 8-float rows v[i] = [row i | row i + 8] (low and high halves) transposed in place into
/// v[k] = [column k of rows 0..<8 | column k of rows 8..<16]: each half is an 8 × 8 transpose.
@inline(__always)
func transposeEightByEightHalves(_ v: inout (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
                                             SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>)) {
    #if arch(x86_64)
    typealias D = SIMD8<Double>
    // Per 128-bit lane: unpack pairs of rows, then pairs of pairs (as 64-bit elements), then
    // exchange 128-bit lanes within each 256-bit half.
    let t0 = _mm512_unpacklo_ps(v.0, v.1), t1 = _mm512_unpackhi_ps(v.0, v.1)
    let t2 = _mm512_unpacklo_ps(v.2, v.3), t3 = _mm512_unpackhi_ps(v.2, v.3)
    let t4 = _mm512_unpacklo_ps(v.4, v.5), t5 = _mm512_unpackhi_ps(v.4, v.5)
    let t6 = _mm512_unpacklo_ps(v.6, v.7), t7 = _mm512_unpackhi_ps(v.6, v.7)
    @inline(__always) func low(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        unsafeBitCast(_mm512_unpacklo_pd(unsafeBitCast(a, to: D.self), unsafeBitCast(b, to: D.self)), to: SIMD16<Float>.self)
    }
    @inline(__always) func high(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        unsafeBitCast(_mm512_unpackhi_pd(unsafeBitCast(a, to: D.self), unsafeBitCast(b, to: D.self)), to: SIMD16<Float>.self)
    }
    // u0: columns 0 (lanes 0, 2) and 4 (lanes 1, 3) of rows 0-3; u4 the same of rows 4-7, etc.
    let u0 = low(t0, t2), u1 = high(t0, t2), u2 = low(t1, t3), u3 = high(t1, t3)
    let u4 = low(t4, t6), u5 = high(t4, t6), u6 = low(t5, t7), u7 = high(t5, t7)
    let first = unsafeBitCast(SIMD16<Int32>(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27), to: SIMD8<Int64>.self)
    let second = unsafeBitCast(SIMD16<Int32>(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31), to: SIMD8<Int64>.self)
    v = (_mm512_permutex2var_ps(u0, first, u4), _mm512_permutex2var_ps(u1, first, u5),
         _mm512_permutex2var_ps(u2, first, u6), _mm512_permutex2var_ps(u3, first, u7),
         _mm512_permutex2var_ps(u0, second, u4), _mm512_permutex2var_ps(u1, second, u5),
         _mm512_permutex2var_ps(u2, second, u6), _mm512_permutex2var_ps(u3, second, u7))
    #else
    var m = [[Float]](repeating: [Float](repeating: 0, count: 16), count: 8)
    withUnsafeBytes(of: v) { raw in
        let f = raw.bindMemory(to: Float.self)
        for i in 0..<8 { for h in 0..<2 { for k in 0..<8 { m[k][8 * h + i] = f[i * 16 + 8 * h + k] } } }
    }
    withUnsafeMutableBytes(of: &v) { raw in
        let f = raw.bindMemory(to: Float.self)
        for k in 0..<8 { for j in 0..<16 { f[k * 16 + j] = m[k][j] } }
    }
    #endif
}

/// Eight vectors of 16 rows (`transposeEightByEightHalves`' output) as eight consecutive panel
/// columns: v.k to column k, rows `firstRow` ..< `firstRow` + 16 (`column` points at row 0 of
/// the first).
@inline(__always)
func storePanelColumns(_ v: (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
                             SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>),
                       _ column: UnsafeMutablePointer<Float>, firstRow: Int) {
    let out = column + firstRow, n = WeightPanels.rows
    storeVector(v.0, out)
    storeVector(v.1, out + n)
    storeVector(v.2, out + 2 * n)
    storeVector(v.3, out + 3 * n)
    storeVector(v.4, out + 4 * n)
    storeVector(v.5, out + 5 * n)
    storeVector(v.6, out + 6 * n)
    storeVector(v.7, out + 7 * n)
}

/// A panel from `count` (≤ 32) row-major rows of `width` values: out[k·32 + i] = rows[i·width + k]
/// (rows past `count` are zero).
func transposeRowsIntoPanel(_ rows: UnsafePointer<Float>, count: Int, width: Int, into out: UnsafeMutablePointer<Float>) {
    let whole = width / 8 * 8
    for half in 0..<2 {
        @inline(__always) func part(_ i: Int, _ j: Int) -> SIMD8<Float> {
            let r = 16 * half + i
            return r < count ? UnsafeRawPointer(rows + r * width + 8 * j).loadUnaligned(as: SIMD8<Float>.self) : SIMD8()
        }
        for j in 0..<(whole / 8) {
            @inline(__always) func pair(_ i: Int) -> SIMD16<Float> { SIMD16(lowHalf: part(i, j), highHalf: part(i + 8, j)) }
            var v = (pair(0), pair(1), pair(2), pair(3), pair(4), pair(5), pair(6), pair(7))
            transposeEightByEightHalves(&v)
            storePanelColumns(v, out + 8 * j * WeightPanels.rows, firstRow: 16 * half)
        }
    }
    for k in whole..<width {
        for i in 0..<WeightPanels.rows { out[k * WeightPanels.rows + i] = i < count ? rows[i * width + k] : 0 }
    }
}
