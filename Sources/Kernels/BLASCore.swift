import CBLAS
import Foundation

/// Which of OpenBLAS's per-CPU kernel sets the process uses.
///
/// This machine's environment sets OPENBLAS_CORETYPE=Haswell (OpenBLAS 0.3.21 itself would
/// detect "Cooperlake" on this Zen 5 CPU), which pins sgemm to the AVX2 kernels although
/// the CPU has full-width AVX-512: the SkylakeX kernels run sgemm about 1.7x faster here
/// (side by side, 2 threads, 512x1536x576: 318 vs 116 GFLOP/s) and give the same perplexity.
/// OpenBLAS picks its kernel set in a library constructor, before `main`;
/// `gotoblas_dynamic_quit` / `gotoblas_dynamic_init` (exported by every DYNAMIC_ARCH build)
/// redo that choice, so it can still be changed at startup, before the first BLAS call.
public enum BLASCore {
    /// The kernel set in use ("Haswell", "SkylakeX", ...).
    public static var name: String { String(cString: openblas_get_corename()) }

    /// Moves OpenBLAS from its Haswell (AVX2) kernels to SkylakeX (AVX-512) on a CPU with
    /// AVX-512 F/BW/DQ/VL. `AQLM_BLAS_CORE=<name>` picks a kernel set instead (e.g.
    /// `haswell` to keep the environment's choice). Call once at startup, before any BLAS
    /// call; returns the kernel set in use afterwards.
    @discardableResult
    public static func preferAVX512() -> String {
        choice
    }

    private static let choice: String = {
        let requested = ProcessInfo.processInfo.environment["AQLM_BLAS_CORE"]
        let target: String
        if let requested, !requested.isEmpty {
            target = requested
        } else if name.lowercased() == "haswell" && cpuHasAVX512() {
            target = "SkylakeX"
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
    private static func cpuHasAVX512() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return false }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }
}
