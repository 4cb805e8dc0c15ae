import Foundation

/// Model aliases the CLI accepts in place of a path, and where setup puts their files.
public enum ModelPaths {
    /// `${XDG_CACHE_HOME:-~/.cache}/aqlm`: everything tools/setup.sh fetches or builds (models,
    /// the default calibration text) lives under it, never in the repository.
    public static var aqlmCacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache")
        return (base as NSString).appendingPathComponent("aqlm")
    }

    /// `${XDG_CACHE_HOME:-~/.cache}/aqlm/models`, where tools/setup.sh unpacks the default and the second model.
    public static var cacheDirectory: String {
        (aqlmCacheDirectory as NSString).appendingPathComponent("models")
    }

    public static let aliases: [String: String] = [
        "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B-Instruct.gguf",
    ]

    /// The default model's file, whether or not it exists yet.
    public static var defaultModel: String { resolve("smollm2-135m") }

    /// The second model's file (Qwen2.5-Coder-0.5B-Instruct: untied head, 151,936-token vocabulary), whether or not it exists yet.
    public static var secondModel: String { resolve("qwen2.5-coder-0.5b") }

    /// An alias resolves to its cached file; anything else is taken as a path.
    public static func resolve(_ nameOrPath: String) -> String {
        if let file = aliases[nameOrPath.lowercased()] {
            return (cacheDirectory as NSString).appendingPathComponent(file)
        }
        return nameOrPath
    }
}
