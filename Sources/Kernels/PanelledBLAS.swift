import CBLAS

/// BLAS products whose every output bit is the same at any thread count.
///
/// Why: OpenBLAS's multi-threaded sgemm rounds differently at 1 and 2 threads (measured: 6,536
/// of the 36,864 outputs of a 64×576×576 product differ), so with the thread count following
/// the free cores (`Threads.adjustToLoad`) a quantization's files would depend on the machine's
/// load. Here OpenBLAS always runs on the calling thread, and a product is cut into a FIXED
/// set of panels chosen from its shape alone (never from the thread count); our worker pool
/// claims the panels dynamically, so a descheduled worker does not hold up the rest (unlike
/// OpenBLAS's static split). Every panel is one single-threaded OpenBLAS call whose result does
/// not depend on who runs it or when, so the product is bit-identical at 1, 2 or N threads.
/// Do not call OpenBLAS's level-2/3 routines directly elsewhere; inside a parallel loop these
/// wrappers run their panels on the calling thread (the pool does not nest), same bits.

/// Whether an operand enters a product as stored or transposed.
public enum Transpose: Sendable {
    case noTrans, trans

    var cblas: CBLAS_TRANSPOSE { self == .trans ? CblasTrans : CblasNoTrans }
}

/// The fixed cut of a product C [m × n] = op(A) [m × k] · op(B) [k × n] into rowPanels ×
/// columnPanels tiles, from (m, n, k) only.
public struct ProductPanels: Equatable, Sendable {
    public let rowPanels: Int
    public let columnPanels: Int
    let m: Int, n: Int

    /// Products below this many multiply-adds (~60 µs on one core) run as one call: a panel
    /// hand-off costs a few µs.
    public static let singleCallWork = 1 << 21
    /// No panel shorter than this (before the cut is rounded down to a multiple of 16).
    public static let minimumPanel = 256
    /// Panels per product: at least two (one per core of the machine this is measured on), more
    /// only while each stays `widePanel` long. Each panel repacks its share of the operands, which
    /// costs CPU time even on one thread (OpenBLAS 0.3, Haswell kernels, one thread, CPU time
    /// against one call: [512×1536]·[1536×576]ᵀ cut in 2 column panels +2 %, 4 +5 %, 2×6 tiles
    /// +9 %; [512×576] rows cut in 2 +4 %, 2×2 +5 %): narrow panels are what cost, so the
    /// 576-896-wide products of small models keep two, while the 4864-14336-wide ones of larger
    /// models give machines with more cores work for them (4 to 14 panels). The cut depends on
    /// the shape only, never on the thread count, so the bits do not either.
    public static let targetTiles = 2
    /// Beyond `targetTiles`, a product is cut further only into panels at least this long.
    public static let widePanel = 1024

    static func panels(_ extent: Int) -> Int {
        min(max(1, extent / minimumPanel), max(targetTiles, extent / widePanel))
    }

    public init(m: Int, n: Int, k: Int) {
        self.m = m
        self.n = n
        let work = m * n * k
        // Columns when they are wide enough (a column panel repacks A's rows, the activations,
        // the cheaper cut), else rows, else one call.
        columnPanels = work < Self.singleCallWork ? 1 : Self.panels(n)
        rowPanels = work < Self.singleCallWork || columnPanels > 1 ? 1 : Self.panels(m)
    }

    public var tiles: Int { rowPanels * columnPanels }

    /// Rows of C (and of op(A)) in row panel i.
    public func rows(_ i: Int) -> Range<Int> { Self.cut(m, rowPanels, i) ..< Self.cut(m, rowPanels, i + 1) }

    /// Columns of C (and of op(B)) in column panel j.
    public func columns(_ j: Int) -> Range<Int> { Self.cut(n, columnPanels, j) ..< Self.cut(n, columnPanels, j + 1) }

    /// Even cuts rounded down to multiples of 16 (whole SIMD kernel widths); panels are at
    /// least `minimumPanel` long, so none becomes empty.
    static func cut(_ extent: Int, _ panels: Int, _ i: Int) -> Int {
        i >= panels ? extent : (extent * i / panels) & ~15
    }
}

/// Row-major C [m × n] = α·op(A)·op(B) + β·C, inner dimension k, as `cblas_sgemm`
/// (A is [m × k] stored, or [k × m] when transposed; B [k × n], or [n × k] when transposed),
/// cut into `ProductPanels` run on our worker pool: the same bits at any thread count.
public func sgemm(_ transA: Transpose, _ transB: Transpose, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                  _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                  _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    guard m > 0, n > 0 else { return }
    BLASThreads.useCallingThreadOnly()
    let panels = ProductPanels(m: m, n: n, k: k)
    parallelFor(panels.tiles) { tile in
        let rows = panels.rows(tile / panels.columnPanels), columns = panels.columns(tile % panels.columnPanels)
        let aPanel = transA == .trans ? a + rows.lowerBound : a + rows.lowerBound * lda
        let bPanel = transB == .trans ? b + columns.lowerBound * ldb : b + columns.lowerBound
        cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(rows.count), Int32(columns.count), Int32(k),
                    alpha, aPanel, Int32(lda), bPanel, Int32(ldb), beta,
                    c + rows.lowerBound * ldc + columns.lowerBound, Int32(ldc))
    }
}

/// The upper triangle (diagonal included) of the row-major C [n × n] = Aᵀ·A for A [rows × n]
/// (leading dimension n), as `cblas_ssyrk(RowMajor, Upper, Trans, β = 0)`; the strict lower
/// triangle is not touched. Cut into column panels of C, each the rectangle above its
/// diagonal block (one sgemm) plus the diagonal block (one ssyrk): the same bits at any
/// thread count, and no more multiply-adds than one ssyrk.
public func gramUpper(_ a: UnsafePointer<Float>, rows: Int, n: Int, _ c: UnsafeMutablePointer<Float>) {
    guard n > 0 else { return }
    BLASThreads.useCallingThreadOnly()
    // Column panels of C whose triangles' areas are equal (cuts at n·√(i/panels)), so each
    // holds the same number of multiply-adds.
    let panels = rows * n * n / 2 < ProductPanels.singleCallWork || n < 2 * ProductPanels.minimumPanel ? 1 : ProductPanels.targetTiles
    func cut(_ i: Int) -> Int { i >= panels ? n : Int((Double(n) * (Double(i) / Double(panels)).squareRoot())) & ~15 }
    parallelFor(panels) { p in
        let first = cut(p), end = cut(p + 1), width = end - first
        if first > 0 {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(first), Int32(width), Int32(rows), 1,
                        a, Int32(n), a + first, Int32(n), 0, c + first, Int32(n))
        }
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(width), Int32(rows), 1, a + first, Int32(n),
                    0, c + first * n + first, Int32(n))
    }
}

/// y [rows] = W·x for the row-major W [rows × columns] (leading dimension `columns`), cut into
/// fixed row panels (memory-bound: the panels let several cores stream W): the same bits at
/// any thread count.
public func sgemv(_ w: UnsafePointer<Float>, rows: Int, columns: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    guard rows > 0 else { return }
    BLASThreads.useCallingThreadOnly()
    // 64k weights (256 KB) is ~10 µs of streaming: below that one call. Up to 8 panels: a
    // matrix-vector product repacks nothing, so more panels cost only their hand-offs.
    let panels = rows * columns < 1 << 16 ? 1 : min(max(1, rows / ProductPanels.minimumPanel), 8)
    parallelFor(panels) { p in
        let first = ProductPanels.cut(rows, panels, p), end = ProductPanels.cut(rows, panels, p + 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(end - first), Int32(columns), 1, w + first * columns,
                    Int32(columns), x, 1, 0, y + first, 1)
    }
}

/// OpenBLAS's own thread count, kept at 1 for the whole process.
public enum BLASThreads {
    /// Sets OpenBLAS to run every call on the calling thread (once; later calls are a check).
    /// The wrappers above call it; call it too before any direct OpenBLAS call.
    @inline(__always)
    public static func useCallingThreadOnly() { _ = oneThread }

    private static let oneThread: Void = openblas_set_num_threads(1)
}
