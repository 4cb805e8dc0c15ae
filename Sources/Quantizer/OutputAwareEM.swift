import Kernels

/// OA-EM-style initialisation (after Kennedy and Moosavi 2026, "Initialisation Determines the
/// Basin"): the additive codebooks are fitted by EM rounds under the output-aware metric before
/// the first beam search, starting from the product k-means fit.
///
/// The metric is the layer objective with the cross-group terms of H dropped:
///   Σ_r Σ_j s_r² (x_rj − Σ_m C_m[c_rjm])ᵀ H_jj (x_rj − Σ_m C_m[c_rjm]),  x_rj = w_rj / s_r,
/// a Mahalanobis distance per group with the g×g diagonal block H_jj of XᵀX. Against the k-means
/// start (diag(H) only, each codebook on its own slice) it adds the correlations of the inputs
/// inside a group and fits all codebooks jointly; against the alternation after it (full H) it
/// makes each group's code choice independent of the other groups, so a round costs a few
/// g-vector operations per group instead of a rank-g update of a d_in-long gradient per code.
///
/// One EM round:
/// - E step: every group's codes by coordinate descent over the M codebooks (the current code is
///   a candidate, so the metric never increases): codebook m's best c minimises
///   q_jmc − 2 C_mc·H_jj t, t = x − Σ_{m'≠m} C_m', q_jmc = C_mc H_jj C_mcᵀ (the beam-search tables).
/// - M step: codebook by codebook (Gauss–Seidel, each the exact minimiser with the others fixed,
///   so again monotone): C_mc = (Σ_{(r,j)∈c} s_r² H_jj)⁻¹ Σ_{(r,j)∈c} s_r² H_jj t_rj.
/// Rounds stop after `options.emIterations` or once a round lowers the metric by less than
/// `emTolerance` of it. Row scales stay the initial RMS (the alternation solves them).
public func outputAwareEMInitialization(
    problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()
) throws -> AdditiveCode {
    var code = scheme.codebookCount <= scheme.groupSize
        ? try productKMeansInitialization(problem: problem, scheme: scheme, options: options)
        : try residualKMeansInitialization(problem: problem, scheme: scheme, options: options)
    let points = normalisedGroups(problem, scales: code.scales, weighted: false).values
    var metric = blockMetric(code, points: points, problem: problem)
    for _ in 0..<max(0, options.emIterations) {
        let before = metric
        code = blockMetricCodeStep(code, points: points, problem: problem)
        code = blockMetricCodebookStep(code, points: points, problem: problem)
        metric = blockMetric(code, points: points, problem: problem)
        if before <= 0 || (before - metric) / before < emTolerance { break }
    }
    return code
}

/// Relative gain of an EM round below which the rounds stop.
let emTolerance = 1e-3

/// Σ_r s_r² Σ_j e_rjᵀ H_jj e_rj, e_rj = x_rj − Σ_m C_m[c_rjm]: the layer objective without the
/// cross-group terms of H.
func blockMetric(_ code: AdditiveCode, points: [Float], problem: LayerProblem) -> Double {
    let g = code.scheme.groupSize, groups = code.groupsPerRow, dIn = problem.dIn
    let reconstruction = code.unscaledReconstruction()
    var perRow = [Double](repeating: 0, count: code.dOut)
    perRow.withUnsafeMutableBufferPointer { perRow in
        let perRow = perRow.baseAddress!
        parallelRowBlocks(code.dOut) { rows in
            var e = [Float](repeating: 0, count: g)
            for r in rows {
                var total: Float = 0
                for j in 0..<groups {
                    for a in 0..<g { e[a] = points[r * dIn + j * g + a] - reconstruction[r * dIn + j * g + a] }
                    for a in 0..<g {
                        var row: Float = 0
                        for b in 0..<g { row += problem.hessian[(j * g + a) * dIn + j * g + b] * e[b] }
                        total += e[a] * row
                    }
                }
                perRow[r] = Double(code.scales[r]) * Double(code.scales[r]) * Double(total)
            }
        }
    }
    return perRow.reduce(0, +)
}

/// The E step: each group's codes re-chosen under its own block metric, one codebook at a time
/// in order 0..<M, from the current codes.
func blockMetricCodeStep(_ code: AdditiveCode, points: [Float], problem: LayerProblem) -> AdditiveCode {
    let tables = BeamSearchTables(code: code, problem: problem)
    let g = code.scheme.groupSize, books = code.scheme.codebookCount, size = code.scheme.codebookSize
    let groups = code.groupsPerRow, dIn = problem.dIn, vectors = books * size
    var codes = code.codes
    codes.withUnsafeMutableBufferPointer { codes in
        tables.withPointers { t in
            let codes = codes.baseAddress!, codebooks = t.codebooks, transposed = t.transposed, energies = t.energies, blocks = t.blocks
            parallelRowBlocks(code.dOut) { rows in
                var sum = [Float](repeating: 0, count: g)
                var query = [Float](repeating: 0, count: g)
                var target = [Float](repeating: 0, count: g)
                for r in rows {
                    for j in 0..<groups {
                        let groupCodes = codes + (r * groups + j) * books
                        let block = blocks + j * g * g
                        for a in 0..<g { sum[a] = 0 }
                        for m in 0..<books {
                            let v = codebooks + (m * size + Int(groupCodes[m])) * g
                            for a in 0..<g { sum[a] += v[a] }
                        }
                        for m in 0..<books {
                            let old = codebooks + (m * size + Int(groupCodes[m])) * g
                            // t = x − (Σ − C_m,old); the score of c is q_jmc − 2 C_c·H_jj t.
                            for a in 0..<g { target[a] = points[r * dIn + j * g + a] - sum[a] + old[a] }
                            for a in 0..<g {
                                var row: Float = 0
                                for b in 0..<g { row += block[a * g + b] * target[b] }
                                query[a] = -2 * row
                            }
                            let best = nearestCandidate(query: query, dims: g, table: transposed + m * g * size, count: size,
                                                        bias: energies + j * vectors + m * size, biasScale: 1, offset: 0)
                            guard best.index != Int(groupCodes[m]) else { continue }
                            let new = codebooks + (m * size + best.index) * g
                            for a in 0..<g { sum[a] += new[a] - old[a] }
                            groupCodes[m] = UInt16(best.index)
                        }
                    }
                }
            }
        }
    }
    var result = code
    result.codes = codes
    return result
}

/// The M step: codebook m = 0, 1, … in turn set to the exact minimiser of the block metric with
/// the codes and the other codebooks fixed; a vector no group uses keeps its value.
func blockMetricCodebookStep(_ code: AdditiveCode, points: [Float], problem: LayerProblem) -> AdditiveCode {
    let g = code.scheme.groupSize, books = code.scheme.codebookCount, size = code.scheme.codebookSize
    let groups = code.groupsPerRow, dIn = problem.dIn, dOut = code.dOut
    // D_mc = Σ s_r² H_jj over the groups using vector (m, c), factored once: it depends on codes
    // and scales only.
    let normalMatrices = BlockJacobi(code: code, problem: problem)
    var used = [Bool](repeating: false, count: books * size)
    for (i, c) in code.codes.enumerated() { used[(i % books) * size + Int(c)] = true }
    var result = code
    for m in 0..<books {
        let current = result
        let reconstruction = current.unscaledReconstruction()
        // b_mc = Σ s_r² H_jj t_rj, t_rj = x_rj − Σ_{m'≠m} C_m'; a fixed split of rows keeps the
        // summation order (hence the result) independent of the thread count.
        let parts = max(1, min(8, dOut / 64))
        var partials = [[Double]](repeating: [], count: parts)
        partials.withUnsafeMutableBufferPointer { partials in
            let partials = partials.baseAddress!
            parallelFor(parts) { part in
                var sums = [Double](repeating: 0, count: size * g)
                var t = [Float](repeating: 0, count: g)
                for r in (dOut * part / parts)..<(dOut * (part + 1) / parts) {
                    let s2 = Double(current.scales[r]) * Double(current.scales[r])
                    for j in 0..<groups {
                        let c = Int(current.codes[(r * groups + j) * books + m])
                        let own = current.codebookOffset(m, c)
                        for a in 0..<g {
                            t[a] = points[r * dIn + j * g + a] - reconstruction[r * dIn + j * g + a] + current.codebooks[own + a]
                        }
                        for a in 0..<g {
                            var row: Float = 0
                            for b in 0..<g { row += problem.hessian[(j * g + a) * dIn + j * g + b] * t[b] }
                            sums[c * g + a] += s2 * Double(row)
                        }
                    }
                }
                partials[part] = sums
            }
        }
        var rhs = [Double](repeating: 0, count: books * size * g)
        for part in partials {
            for k in 0..<(size * g) { rhs[m * size * g + k] += part[k] }
        }
        let solution = normalMatrices.solve(rhs)
        for c in 0..<size where used[m * size + c] {
            let offset = result.codebookOffset(m, c)
            for a in 0..<g { result.codebooks[offset + a] = Float(solution[offset + a]) }
        }
    }
    return result
}
