import Foundation
import Checkpoint
import Evaluation
import Kernels
import Llama

/// The teacher's next-token distribution at every calibration position, kept compactly: the k
/// most likely tokens with their log-probabilities and the log of the mass of all the others
/// (a 49152-wide row per token would take 13 GB for 65k tokens; k = 64 takes 34 MB).
/// Distillation then matches the student to the teacher on these k + 1 outcomes.
public struct TeacherTargets: Sendable, Equatable {
    public let k: Int
    /// [positions × k], most likely first.
    public var ids: [Int32]
    public var logProbs: [Float]
    /// [positions]
    public var tailLogMass: [Float]

    public var positions: Int { tailLogMass.count }

    public init(k: Int, ids: [Int32], logProbs: [Float], tailLogMass: [Float]) {
        precondition(ids.count == tailLogMass.count * k && logProbs.count == ids.count, "teacher targets are not [positions × k]")
        self.k = k
        self.ids = ids
        self.logProbs = logProbs
        self.tailLogMass = tailLogMass
    }

    /// Runs `teacher` over each sequence (positions 0...) and keeps the top `k` of every row.
    /// `done`, the targets of the first sequences from an interrupted run (whole sequences, same
    /// k), is continued rather than recomputed; `progress` gets the targets so far after every
    /// sequence (to save them now and then: on Qwen2.5-0.5B the pass takes half an hour).
    public static func compute(teacher: LlamaModel, sequences: [[Int]], k: Int, continuing done: TeacherTargets? = nil,
                               progress: (_ sequencesDone: Int, _ targets: TeacherTargets) throws -> Void = { _, _ in })
        rethrows -> TeacherTargets {
        let vocab = teacher.config.vocabSize, length = sequences.first?.count ?? 0
        let state = teacher.makeState(maxPositions: max(length, 1), maxLogitRows: max(length, 1))
        var out = TeacherTargets(k: k, ids: [], logProbs: [], tailLogMass: [])
        var first = 0
        if let done, done.k == k, length > 0, done.positions % length == 0, done.positions / length <= sequences.count {
            out = done
            first = done.positions / length
        }
        out.ids.reserveCapacity(sequences.count * length * k)
        out.logProbs.reserveCapacity(sequences.count * length * k)
        out.tailLogMass.reserveCapacity(sequences.count * length)
        for (s, sequence) in sequences.enumerated() where s >= first {
            Threads.adjustToLoad()
            state.reset()
            let rows = teacher.forward(sequence, state: state, logits: .all).count
            let start = out.positions
            out.ids.append(contentsOf: repeatElement(0, count: rows * k))
            out.logProbs.append(contentsOf: repeatElement(0, count: rows * k))
            out.tailLogMass.append(contentsOf: repeatElement(0, count: rows))
            // Rows are independent, so they are split over the workers (the summary would otherwise
            // be a serial share that grows with the core count); every row's figures are the same
            // whichever worker computes them.
            out.ids.withUnsafeMutableBufferPointer { ids in
                out.logProbs.withUnsafeMutableBufferPointer { logProbs in
                    out.tailLogMass.withUnsafeMutableBufferPointer { tail in
                        parallelChunks(rows) { lo, hi in
                            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: vocab)
                            defer { scratch.deallocate() }
                            for row in lo..<hi {
                                let logits = state.logits(row: row)
                                let total = logSumExp(logits.baseAddress!, count: vocab)
                                let top = topKEntries(logits, k: k)
                                precondition(top.count == k, "teacher top-k \(k) exceeds the vocabulary of \(vocab)")
                                for (j, entry) in top.enumerated() {
                                    ids[(start + row) * k + j] = Int32(entry.index)
                                    logProbs[(start + row) * k + j] = entry.value - total
                                }
                                tail[start + row] = Evaluation.tailLogMass(logits, excluding: top.map(\.index), logSumExp: total,
                                                                           scratch: scratch)
                            }
                        }
                    }
                }
            }
            try progress(s + 1, out)
        }
        return out
    }

    /// Rows `range` (positions) as a slice view for one sequence.
    func rows(_ range: Range<Int>) -> TeacherTargets {
        TeacherTargets(k: k, ids: Array(ids[(range.lowerBound * k)..<(range.upperBound * k)]),
                       logProbs: Array(logProbs[(range.lowerBound * k)..<(range.upperBound * k)]),
                       tailLogMass: Array(tailLogMass[range]))
    }

    func write(to path: String, fingerprint: String) throws {
        var writer = SafeTensorsWriter(metadata: ["format": "aqlm-teacher", "fingerprint": fingerprint])
        try writer.add("ids", shape: [positions, k], integers: ids)
        try writer.add("log_probs", shape: [positions, k], floats: logProbs)
        try writer.add("tail_log_mass", shape: [positions], floats: tailLogMass)
        try writer.write(to: path)
    }

    /// The targets saved at `path`, or nil when they were made for another fingerprint.
    static func read(from path: String, fingerprint: String) throws -> TeacherTargets? {
        let file = try SafeTensorsFile(path: path)
        guard file.metadata["fingerprint"] == fingerprint, let info = file.tensor("ids"), info.shape.count == 2 else { return nil }
        return TeacherTargets(k: info.shape[1], ids: try file.integers("ids", as: Int32.self),
                              logProbs: try file.floats("log_probs"), tailLogMass: try file.floats("tail_log_mass"))
    }
}

/// Distillation on one row of student logits z against the teacher's top-k and tail:
///   L = Σ_{i ∈ top} p_i log(p_i/q_i) + p_tail log(p_tail/q_tail),  q = softmax(z)
/// i.e. KL(teacher ‖ student) with every token outside the teacher's top k merged into one
/// outcome (a lower bound of the full KL). Its gradient is ∂L/∂z = q − p̃ with p̃_i = p_i on the
/// top k and p_tail·q_i/q_tail elsewhere (the student's own tail shape, rescaled to the
/// teacher's tail mass). Overwrites `row` with `gradientScale`·∂L/∂z and returns L.
///
/// With a `nextToken` t (the text's own next token) and a `hardLabelWeight` α, the loss is
/// (1 − α)·L + α·(−log q_t), whose gradient is q − (1 − α)p̃ − α·e_t: the target becomes a mixture
/// of the teacher's distribution and the one-hot truth.
public func distillationStep(_ row: UnsafeMutablePointer<Float>, count n: Int, ids: UnsafePointer<Int32>, logProbs: UnsafePointer<Float>,
                             k: Int, tailLogMass: Float, gradientScale: Float,
                             nextToken: Int? = nil, hardLabelWeight: Float = 0) -> Double {
    softmax(row, count: n)
    let hard = nextToken.map { (token: $0, weight: Double(hardLabelWeight), q: Double(row[$0])) }
    let teacherWeight = 1 - (hard?.weight ?? 0)
    var topProbabilities = [Float](repeating: 0, count: k)
    for j in 0..<k {
        topProbabilities[j] = row[Int(ids[j])]
        row[Int(ids[j])] = 0
    }
    // q_tail summed over the tail itself, not as 1 − Σ_top q: when the student is confident the
    // top k's Float probabilities can sum past 1, the clamped q_tail became ~1e-38, and
    // p_tail·q_i/q_tail put ~1e26 on the tail (the "gradient spikes" the step guard skipped).
    var tailSum = 0.0
    for i in 0..<n { tailSum += Double(row[i]) }
    let studentTail = max(tailSum, Double(Float.leastNormalMagnitude))
    let teacherTail = Double(Foundation.exp(tailLogMass))
    var loss = teacherTail > 0 ? teacherTail * (Double(tailLogMass) - Foundation.log(studentTail)) : 0
    for j in 0..<k {
        let q = Double(topProbabilities[j]), logP = Double(logProbs[j])
        loss += Foundation.exp(logP) * (logP - Foundation.log(max(q, Double(Float.leastNormalMagnitude))))
    }
    scale(row, by: gradientScale * Float(1 - teacherWeight * teacherTail / studentTail), count: n)
    for j in 0..<k {
        row[Int(ids[j])] = gradientScale * (topProbabilities[j] - Float(teacherWeight) * Foundation.exp(logProbs[j]))
    }
    guard let hard, hard.weight > 0 else { return loss }
    row[hard.token] -= gradientScale * Float(hard.weight)
    return teacherWeight * loss - hard.weight * Foundation.log(max(hard.q, Double(Float.leastNormalMagnitude)))
}
