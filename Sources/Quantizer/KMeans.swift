import Kernels

/// A k-means fit: centroids [clusters, dims] and each point's cluster.
public struct KMeansFit: Sendable {
    public var centroids: [Float]
    public var assignments: [Int32]
    /// Σ_i Σ_a ω_ia (x_ia − c_a)² at the returned assignments and centroids.
    public var objective: Double
    public var iterationsRun: Int
}

/// k-means with per-coordinate point weights ω: minimises Σ_i Σ_a ω_ia (x_ia − c_{k(i),a})².
///
/// With x a row-normalised weight group and ω_ia = s_r² · H[col(a), col(a)], this is exactly the
/// diagonal part of the layer objective tr((W−Ŵ)H(W−Ŵ)ᵀ), which is what the initialisation should
/// fit (the reference AQLM clusters unweighted, which wastes codes on columns the inputs never excite).
///
/// Distances go through the candidate-scoring kernel: Σ_a ω_a (x_a − c_a)² = Σ_a ω_a x_a²
/// + [−2ω⊙x, ω]·[c, c⊙c], a dot product of length 2·dims with a point-independent table.
/// Seeding: weighted k-means++ (D² sampling) on a random subset of 64 points per cluster, up to
/// 1024 clusters; a random sample of points above. Lloyd iterations run on a random subset of at
/// most `trainingPointsPerCluster` points per cluster (as faiss does; the centroids barely move
/// with more), and the returned assignment covers every point.
public func weightedKMeans(
    points allPoints: [Float], weights allWeights: [Float], dims: Int, clusters: Int, iterations: Int, seed: UInt64,
    trainingPointsPerCluster: Int = 128
) -> KMeansFit {
    precondition(dims > 0 && allPoints.count % dims == 0 && allWeights.count == allPoints.count && clusters > 0)
    var rng = SeededRandom(seed: seed)
    let total = allPoints.count / dims
    var points = allPoints, weights = allWeights
    if trainingPointsPerCluster > 0 && total > trainingPointsPerCluster * clusters {
        let subset = randomSubset(of: total, size: trainingPointsPerCluster * clusters, rng: &rng).sorted()
        points = gather(allPoints, rows: subset, dims: dims)
        weights = gather(allWeights, rows: subset, dims: dims)
    }
    let n = points.count / dims
    guard n > 0 else {
        return KMeansFit(centroids: [Float](repeating: 0, count: clusters * dims), assignments: [], objective: 0, iterationsRun: 0)
    }
    var centroids: [Float]
    if clusters <= 1024 {
        let subset = randomSubset(of: n, size: min(n, 64 * clusters), rng: &rng)
        centroids = plusPlusSeeds(points: gather(points, rows: subset, dims: dims), weights: gather(weights, rows: subset, dims: dims),
                                  dims: dims, clusters: clusters, rng: &rng)
    } else {
        centroids = sampledSeeds(points: points, dims: dims, clusters: clusters, rng: &rng)
    }
    var assignment = assignNearest(points: points, weights: weights, dims: dims, centroids: centroids, clusters: clusters)
    var iterationsRun = 0
    for _ in 0..<iterations {
        iterationsRun += 1
        centroids = weightedMeans(points: points, weights: weights, dims: dims, assignments: assignment.clusters,
                                  previous: centroids, clusters: clusters)
        reseedEmptyClusters(&centroids, points: points, dims: dims, assignment: assignment, clusters: clusters)
        let next = assignNearest(points: points, weights: weights, dims: dims, centroids: centroids, clusters: clusters)
        let unchanged = next.clusters == assignment.clusters
        assignment = next
        if unchanged { break }
    }
    if n < total {
        assignment = assignNearest(points: allPoints, weights: allWeights, dims: dims, centroids: centroids, clusters: clusters)
    }
    let objective = assignment.distances.reduce(0.0) { $0 + Double($1) }
    return KMeansFit(centroids: centroids, assignments: assignment.clusters, objective: objective, iterationsRun: iterationsRun)
}

struct Assignment {
    var clusters: [Int32]
    /// Weighted squared distance of each point to its centroid.
    var distances: [Float]
}

/// Nearest centroid of every point under the weighted distance, in parallel over points.
func assignNearest(points: [Float], weights: [Float], dims: Int, centroids: [Float], clusters: Int) -> Assignment {
    let n = points.count / dims
    // table rows 0..<dims: coordinate a of every centroid; rows dims..<2·dims: its square.
    var table = [Float](repeating: 0, count: 2 * dims * clusters)
    for c in 0..<clusters {
        for a in 0..<dims {
            let v = centroids[c * dims + a]
            table[a * clusters + c] = v
            table[(dims + a) * clusters + c] = v * v
        }
    }
    var result = Assignment(clusters: [Int32](repeating: 0, count: n), distances: [Float](repeating: 0, count: n))
    table.withUnsafeBufferPointer { table in
        points.withUnsafeBufferPointer { x in
            weights.withUnsafeBufferPointer { w in
                result.clusters.withUnsafeMutableBufferPointer { out in
                    result.distances.withUnsafeMutableBufferPointer { dist in
                        let table = table.baseAddress!, x = x.baseAddress!, w = w.baseAddress!
                        let out = out.baseAddress!, dist = dist.baseAddress!
                        parallelFor((n + 4095) / 4096) { block in
                            var query = [Float](repeating: 0, count: 2 * dims)
                            for i in (block * 4096)..<min(n, (block + 1) * 4096) {
                                var pointEnergy: Float = 0
                                for a in 0..<dims {
                                    let xa = x[i * dims + a], wa = w[i * dims + a]
                                    query[a] = -2 * wa * xa
                                    query[dims + a] = wa
                                    pointEnergy += wa * xa * xa
                                }
                                let best = nearestCandidate(query: query, dims: 2 * dims, table: table, count: clusters,
                                                            bias: nil, biasScale: 0, offset: 0)
                                out[i] = Int32(best.index)
                                dist[i] = max(0, best.value + pointEnergy)
                            }
                        }
                    }
                }
            }
        }
    }
    return result
}

/// Per-coordinate weighted mean of each cluster's points; a coordinate no member weighs keeps
/// its previous value.
func weightedMeans(points: [Float], weights: [Float], dims: Int, assignments: [Int32], previous: [Float], clusters: Int) -> [Float] {
    var weightedSums = [Double](repeating: 0, count: clusters * dims)
    var weightSums = [Double](repeating: 0, count: clusters * dims)
    for i in 0..<assignments.count {
        let base = Int(assignments[i]) * dims
        for a in 0..<dims {
            let w = Double(weights[i * dims + a])
            weightedSums[base + a] += w * Double(points[i * dims + a])
            weightSums[base + a] += w
        }
    }
    var centroids = previous
    for k in 0..<(clusters * dims) where weightSums[k] > 0 {
        centroids[k] = Float(weightedSums[k] / weightSums[k])
    }
    return centroids
}

/// Moves every empty cluster onto the worst-fitted points (largest weighted distance), one each.
func reseedEmptyClusters(_ centroids: inout [Float], points: [Float], dims: Int, assignment: Assignment, clusters: Int) {
    var used = [Bool](repeating: false, count: clusters)
    for c in assignment.clusters { used[Int(c)] = true }
    let empty = (0..<clusters).filter { !used[$0] }
    guard !empty.isEmpty else { return }
    let worst = assignment.distances.indices.sorted {
        assignment.distances[$0] != assignment.distances[$1] ? assignment.distances[$0] > assignment.distances[$1] : $0 < $1
    }
    for (slot, cluster) in empty.enumerated() where slot < worst.count {
        let i = worst[slot]
        for a in 0..<dims { centroids[cluster * dims + a] = points[i * dims + a] }
    }
}

/// Weighted k-means++: each next seed is a point drawn with probability ∝ its weighted squared
/// distance to the nearest seed so far (Arthur & Vassilvitskii 2007).
func plusPlusSeeds(points: [Float], weights: [Float], dims: Int, clusters: Int, rng: inout SeededRandom) -> [Float] {
    let n = points.count / dims
    var centroids = [Float](repeating: 0, count: clusters * dims)
    var nearest = [Float](repeating: .infinity, count: n)
    var chosen = Int(rng.next() % UInt64(n))
    for k in 0..<clusters {
        for a in 0..<dims { centroids[k * dims + a] = points[chosen * dims + a] }
        if k == clusters - 1 { break }
        let total = lowerNearestDistances(&nearest, points: points, weights: weights, dims: dims,
                                          centroid: Array(centroids[(k * dims)..<((k + 1) * dims)]))
        if total <= 0 {
            chosen = Int(rng.next() % UInt64(n))
            continue
        }
        var target = Double(rng.nextFloat()) * total
        chosen = n - 1
        for i in 0..<n {
            target -= Double(nearest[i])
            if target < 0 { chosen = i; break }
        }
    }
    return centroids
}

/// nearest[i] = min(nearest[i], weighted distance of point i to `centroid`), in parallel; returns
/// Σ nearest, summed over fixed 4096-point chunks in order so it does not depend on the thread count.
private func lowerNearestDistances(_ nearest: inout [Float], points: [Float], weights: [Float], dims: Int, centroid: [Float]) -> Double {
    let n = nearest.count, chunk = 4096
    let chunks = (n + chunk - 1) / chunk
    var partial = [Double](repeating: 0, count: chunks)
    nearest.withUnsafeMutableBufferPointer { near in
        points.withUnsafeBufferPointer { x in
            weights.withUnsafeBufferPointer { w in
                partial.withUnsafeMutableBufferPointer { partial in
                    let near = near.baseAddress!, x = x.baseAddress!, w = w.baseAddress!, partial = partial.baseAddress!
                    parallelFor(chunks) { k in
                        let lo = k * chunk, hi = min(n, lo + chunk)
                        partial[k] = lowerNearestWeightedDistances(
                            near + lo, points: x + lo * dims, weights: w + lo * dims, dims: dims, count: hi - lo, centroid: centroid)
                    }
                }
            }
        }
    }
    return partial.reduce(0, +)
}

/// `size` distinct indices of 0..<n in random order (partial Fisher–Yates).
func randomSubset(of n: Int, size: Int, rng: inout SeededRandom) -> [Int] {
    var order = Array(0..<n)
    for k in 0..<size { order.swapAt(k, k + Int(rng.next() % UInt64(n - k))) }
    return Array(order.prefix(size))
}

/// The given rows of a [rows, dims] matrix.
func gather(_ values: [Float], rows: [Int], dims: Int) -> [Float] {
    var out = [Float]()
    out.reserveCapacity(rows.count * dims)
    for r in rows { out += values[(r * dims)..<((r + 1) * dims)] }
    return out
}

/// `clusters` distinct random points (all points, repeated, if there are fewer).
func sampledSeeds(points: [Float], dims: Int, clusters: Int, rng: inout SeededRandom) -> [Float] {
    let n = points.count / dims
    var order = Array(0..<n)
    var centroids = [Float](repeating: 0, count: clusters * dims)
    for k in 0..<clusters {
        let slot = k % n
        if slot == 0 && k > 0 { order = Array(0..<n) }
        let pick = slot + Int(rng.next() % UInt64(n - slot))
        order.swapAt(slot, pick)
        for a in 0..<dims { centroids[k * dims + a] = points[order[slot] * dims + a] }
    }
    return centroids
}
