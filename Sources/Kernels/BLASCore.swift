import CBLAS
import Foundation

/// Which of OpenBLAS's per-CPU kernel sets the process uses.
///
/// This machine's environment sets OPENBLAS_CORETYPE=Haswell because older OpenBLAS builds
/// compute wrong results or crash with their own choice on these CPUs, so by default we keep
/// the environment's kernels (every figure in BENCHMARKS.md is measured with them).
/// `AQLM_BLAS_CORE=SkylakeX` opts into the AVX-512 kernels, which ran sgemm about 1.7x faster
/// here (512x1536x576) and gave the same perplexity on the default model; it is an opt-in
/// because the environment's warning is about exactly such a switch. OpenBLAS picks its
/// kernel set in a library constructor, before `main`; `gotoblas_dynamic_quit` /
/// `gotoblas_dynamic_init` (exported by every DYNAMIC_ARCH build) redo that choice.
public enum BLASCore {
    /// The kernel set in use ("Haswell", "SkylakeX", ...).
    public static var name: String { String(cString: openblas_get_corename()) }

    /// Applies `AQLM_BLAS_CORE=<name>` (e.g. `SkylakeX`) when set and the CPU supports it;
    /// otherwise replaces OpenBLAS's generic fallback (Prescott) by Haswell on a CPU with AVX2 and
    /// FMA, and leaves any other choice alone. Call once at startup, before any BLAS
    /// call; returns the kernel set in use afterwards.
    @discardableResult
    public static func applyRequestedCore() -> String {
        choice
    }

    private static let choice: String = {
        let requested = ProcessInfo.processInfo.environment["AQLM_BLAS_CORE"]
        let target: String
        if let requested, !requested.isEmpty {
            if requested.lowercased() == "skylakex" && !cpuHasAVX512() { return name }
            target = requested
        } else if name.lowercased() == "prescott" && cpuHas(["avx2", "fma"]) {
            // OpenBLAS 0.3.21 does not know newer CPUs (seen: a Sapphire Rapids reporting itself
            // as "Intel(R) Xeon(R) Processor") and falls back to its generic SSE3 kernels:
            // sgemm 2.35x and sgemv 1.66x slower than its Haswell (AVX2 + FMA) set, which every
            // CPU with those flags runs correctly.
            target = "Haswell"
        } else {
            return name
        }
        guard target.lowercased() != name.lowercased(),
              let quit = symbol("gotoblas_dynamic_quit"), let initialize = symbol("gotoblas_dynamic_init")
        else { return name }
        setenv("OPENBLAS_CORETYPE", target, 1)
        quit()
        initialize()
        return name
    }()

    private static func symbol(_ name: String) -> (@convention(c) () -> Void)? {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, name) else { return nil }
        return unsafeBitCast(address, to: (@convention(c) () -> Void).self)
    }

    /// The SkylakeX kernels use AVX-512 F, BW, DQ and VL.
    private static func cpuHasAVX512() -> Bool { cpuHas(["avx512f", "avx512bw", "avx512dq", "avx512vl"]) }

    private static func cpuHas(_ wanted: [String]) -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return false }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        return wanted.allSatisfy(flags.contains)
    }
}
