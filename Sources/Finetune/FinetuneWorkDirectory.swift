import Foundation
import Checkpoint

/// `<output>.work/` of an end-to-end fine-tuning run: the teacher's targets
/// (`teacher.safetensors`), the trained parameters, the best epoch's parameters and Adam's
/// moments (`state.safetensors`), and `progress.json` (settings fingerprint, position in the
/// run, losses so far), written last and by rename, so a run killed at any instant resumes
/// from a consistent state.
struct FinetuneWorkDirectory {
    let path: String
    let fingerprint: String
    /// The teacher's targets carry their own, narrower fingerprint, so a saved file can seed
    /// runs that differ only in training settings.
    let teacherFingerprint: String

    init(output: String, fingerprint: String, teacherFingerprint: String) {
        path = output + ".work"
        self.fingerprint = fingerprint
        self.teacherFingerprint = teacherFingerprint
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// The teacher's targets (`partial`: those of the first sequences of an interrupted pass), if saved.
    func loadTeacher(partial: Bool = false) throws -> TeacherTargets? {
        let name = teacherFile(partial: partial)
        guard FileManager.default.fileExists(atPath: file(name)) else { return nil }
        return try TeacherTargets.read(from: file(name), fingerprint: teacherFingerprint)
    }

    /// Saves the teacher's targets; the whole pass's replace any partial ones.
    func saveTeacher(_ targets: TeacherTargets, partial: Bool = false) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try targets.write(to: file(teacherFile(partial: partial)), fingerprint: teacherFingerprint)
        if !partial { try? FileManager.default.removeItem(atPath: file(teacherFile(partial: true))) }
    }

    private func teacherFile(partial: Bool) -> String { partial ? "teacher.partial.safetensors" : "teacher.safetensors" }

    func save(_ trainer: ModelTrainer) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var writer = SafeTensorsWriter(metadata: ["format": "aqlm-finetune-state"])
        for (name, values) in trainer.model.parameters.sorted(by: { $0.key < $1.key }) {
            try writer.add("param." + name, shape: [values.count], floats: values)
        }
        for (name, values) in trainer.best.parameters.sorted(by: { $0.key < $1.key }) {
            try writer.add("best." + name, shape: [values.count], floats: values)
        }
        if trainer.options.codeUpdate.enabled {
            // V steps move the codes: both the current and the best epoch's are state.
            for (prefix, model) in [("codes.", trainer.model), ("best_codes.", trainer.best)] {
                for (name, codes) in model.codeTensors.sorted(by: { $0.key < $1.key }) {
                    try writer.add(prefix + name, shape: [codes.count], floats: codes.map { Float($0) })
                }
            }
        }
        if let state = trainer.straightThrough {
            let (buffers, moments) = state.tensors
            for (name, values) in buffers.sorted(by: { $0.key < $1.key }) {
                try writer.add("st.b." + name, shape: [values.count], floats: values)
                try writer.add("st.v." + name, shape: [values.count], floats: moments[name]!)
            }
        }
        for (name, moments) in trainer.optimizer.moments.sorted(by: { $0.key < $1.key }) {
            try writer.add("adam.m." + name, shape: [moments.first.count], floats: moments.first)
            try writer.add("adam.v." + name, shape: [moments.second.count], floats: moments.second)
        }
        try writer.write(to: file("state.safetensors"))
        try writeJSONFile(.object([
            ("fingerprint", .string(fingerprint)),
            ("epoch", .int(trainer.epoch)),
            ("step_in_epoch", .int(trainer.stepInEpoch)),
            ("adam_step", .int(trainer.optimizer.step)),
            ("epoch_loss", .double(trainer.epochLoss)),
            ("training_loss", .array(trainer.trainingLoss.map(JSONValue.double))),
            ("validation_loss", .array(trainer.validationLoss.map(JSONValue.double))),
            ("best_epoch", .int(trainer.bestEpoch)),
            ("codes_changed", .array(trainer.codesChanged.map(JSONValue.double))),
            ("epoch_codes_changed", .int(trainer.epochCodesChanged)),
            ("code_updates", .int(trainer.codeUpdates)),
            ("straight_through_steps", .int(trainer.straightThrough?.steps ?? 0)),
        ]), to: file("progress.json"))
    }

    /// Loads a saved state into `trainer`; false when there is none (a fresh start).
    func restore(into trainer: inout ModelTrainer) throws -> Bool {
        guard FileManager.default.fileExists(atPath: file("progress.json")) else { return false }
        let progress = try readJSONFile(file("progress.json"))
        guard progress["fingerprint"]?.string == fingerprint else {
            throw FinetuneError("\(path) holds an unfinished run with different settings; rerun with the same options to resume it, or remove it")
        }
        let state = try SafeTensorsFile(path: file("state.safetensors"))
        var parameters: [String: [Float]] = [:], best: [String: [Float]] = [:]
        var first: [String: [Float]] = [:], second: [String: [Float]] = [:]
        var codes: [String: [UInt16]] = [:], bestCodes: [String: [UInt16]] = [:]
        var buffersSet = Set<String>(), momentsSet = Set<String>()
        for info in state.tensors {
            let values = try state.floats(info)
            // Converted: the map's pages of it are not needed again (the straight-through
            // state is most of the file, and would otherwise stay resident beside its copy).
            releaseMappedPages(state.rawBytes(info))
            let tables = [("param.", 0), ("best.", 1), ("adam.m.", 2), ("adam.v.", 3), ("codes.", 4), ("best_codes.", 5),
                          ("st.b.", 6), ("st.v.", 7)]
            for (prefix, table) in tables where info.name.hasPrefix(prefix) {
                let name = String(info.name.dropFirst(prefix.count))
                switch table {
                case 0: parameters[name] = values
                case 1: best[name] = values
                case 2: first[name] = values
                case 3: second[name] = values
                case 4: codes[name] = values.map { UInt16($0) }
                case 5: bestCodes[name] = values.map { UInt16($0) }
                default:
                    // Straight to the trainer, replacing the buffer it started with.
                    guard trainer.straightThrough != nil else { continue }
                    try trainer.straightThrough!.setTensor(name, moment: table == 7, values: values)
                    if table == 6 { buffersSet.insert(name) } else { momentsSet.insert(name) }
                }
            }
        }
        try trainer.model.setParameters(parameters)
        try trainer.best.setParameters(best)
        if trainer.options.codeUpdate.enabled {
            try trainer.model.setCodeTensors(codes)
            try trainer.best.setCodeTensors(bestCodes)
        }
        if trainer.straightThrough != nil {
            let names = trainer.straightThrough!.tensorNames
            if let missing = names.subtracting(buffersSet).union(names.subtracting(momentsSet)).sorted().first {
                throw FinetuneError("the work directory lacks the straight-through state of '\(missing)'")
            }
            trainer.straightThrough!.steps = progress["straight_through_steps"]?.int ?? 0
        }
        var moments: [String: (first: [Float], second: [Float])] = [:]
        for (name, m) in first {
            guard let v = second[name] else { throw FinetuneError("\(file("state.safetensors")): no second moment for '\(name)'") }
            moments[name] = (m, v)
        }
        func int(_ key: String) throws -> Int {
            guard let v = progress[key]?.int else { throw FinetuneError("\(file("progress.json")): '\(key)' is missing") }
            return v
        }
        trainer.optimizer.step = try int("adam_step")
        trainer.optimizer.moments = moments
        trainer.epoch = try int("epoch")
        trainer.stepInEpoch = try int("step_in_epoch")
        trainer.bestEpoch = try int("best_epoch")
        trainer.epochLoss = progress["epoch_loss"]?.double ?? 0
        trainer.trainingLoss = progress["training_loss"]?.array?.compactMap(\.double) ?? []
        trainer.validationLoss = progress["validation_loss"]?.array?.compactMap(\.double) ?? []
        trainer.codesChanged = progress["codes_changed"]?.array?.compactMap(\.double) ?? []
        trainer.epochCodesChanged = progress["epoch_codes_changed"]?.int ?? 0
        trainer.codeUpdates = progress["code_updates"]?.int ?? 0
        return true
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
