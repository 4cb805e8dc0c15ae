import Kernels

/// Re-seeds every code no group uses (a dead code wastes 1/2^B of its codebook) from the groups the
/// current reconstruction fits worst: with e_rj = w_rj − ŵ_rj, the groups of largest e_rjᵀ H_jj e_rj
/// each give one dead code of codebook m the vector that would make that group exact,
/// w_rj / s_r − Σ_{m'≠m} C_m'[codes[r, j, m']]. The objective does not change (the code is still
/// unused); the next code search adopts it wherever it helps. Returns what was re-seeded.
public func restartDeadCodes(_ code: inout AdditiveCode, problem: LayerProblem, iteration: Int) -> [DeadCodeRestart] {
    let usage = code.usage()
    let dead = usage.map { usage in usage.counts.indices.filter { usage.counts[$0] == 0 } }
    let needed = dead.reduce(0) { $0 + $1.count }
    guard needed > 0 else { return [] }
    let worst = worstFittedGroups(code, problem: problem, count: needed)
    let g = code.scheme.groupSize, books = code.scheme.codebookCount, groups = code.groupsPerRow
    var next = 0
    var restarts = [DeadCodeRestart]()
    for m in 0..<books where !dead[m].isEmpty {
        var reseeded = [Int]()
        for c in dead[m] where next < worst.count {
            let group = worst[next]
            next += 1
            let r = group / groups, j = group % groups
            var target = (0..<g).map { problem.weight[r * problem.dIn + j * g + $0] / code.scales[r] }
            for other in 0..<books where other != m {
                let vector = code.codebookOffset(other, Int(code.codes[group * books + other]))
                for a in 0..<g { target[a] -= code.codebooks[vector + a] }
            }
            let offset = code.codebookOffset(m, c)
            for a in 0..<g { code.codebooks[offset + a] = target[a] }
            reseeded.append(c)
        }
        if !reseeded.isEmpty { restarts.append(DeadCodeRestart(iteration: iteration, codebook: m, codes: reseeded)) }
    }
    return restarts
}

/// Indices (r·groups + j) of the `count` groups with the largest e_rjᵀ H_jj e_rj and a nonzero scale.
private func worstFittedGroups(_ code: AdditiveCode, problem: LayerProblem, count: Int) -> [Int] {
    let g = code.scheme.groupSize, groups = code.groupsPerRow, dIn = problem.dIn
    let approximation = code.dequantized()
    var errors = [Float](repeating: 0, count: problem.dOut * groups)
    for r in 0..<problem.dOut where code.scales[r] != 0 {
        for j in 0..<groups {
            var error: Float = 0
            for a in 0..<g {
                let ea = problem.weight[r * dIn + j * g + a] - approximation[r * dIn + j * g + a]
                var row: Float = 0
                for b in 0..<g {
                    let eb = problem.weight[r * dIn + j * g + b] - approximation[r * dIn + j * g + b]
                    row += problem.hessian[(j * g + a) * dIn + j * g + b] * eb
                }
                error += ea * row
            }
            errors[r * groups + j] = error
        }
    }
    let order = errors.indices.sorted { errors[$0] != errors[$1] ? errors[$0] > errors[$1] : $0 < $1 }
    return Array(order.prefix(count)).filter { errors[$0] > 0 }
}
