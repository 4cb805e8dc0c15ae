import CBLAS
import Foundation

/// Which of OpenBLAS's per-CPU kernel sets the process uses.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) predates AMD Zen 5 and falls back to its Haswell
/// (AVX2) kernels on this machine, although the CPU has full-width AVX-512; its SkylakeX
/// kernels run sgemm about 1.7x faster here (measured side by side: 318 vs 116 GFLOP/s
/// at 512x1536x576, two threads). OpenBLAS picks the kernel set in a library constructor,
/// before `main`, from `OPENBLAS_CORETYPE`; `gotoblas_dynamic_quit` / `gotoblas_dynamic_init`
/// (exported by every DYNAMIC_ARCH build) redo that choice, so it can still be corrected at
/// startup, before the first BLAS call.
public enum BLASCore {
    /// The kernel set in use ("Haswell", "SkylakeX", ...).
    public static var name: String { String(cString: openblas_get_corename()) }

    /// Switches OpenBLAS to its SkylakeX (AVX-512) kernels when it fell back to Haswell on a
    /// CPU with AVX-512 F/BW/DQ/VL, unless the user chose a core with OPENBLAS_CORETYPE.
    /// Call once at startup, before any BLAS call; returns the kernel set in use afterwards.
    @discardableResult
    public static func preferAVX512() -> String {
        choice
    }

    private static let choice: String = {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              name.lowercased() == "haswell", cpuHasAVX512(),
              let quit = symbol("gotoblas_dynamic_quit"), let initialize = symbol("gotoblas_dynamic_init")
        else { return name }
        setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1)
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
