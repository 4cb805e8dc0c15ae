// swift-tools-version:6.0
import Foundation
import PackageDescription

// libFuzzer harnesses for the file parsers, kept out of the root package so that the product
// build and its flags stay untouched: tools/fuzz.sh builds this package with
// `--sanitize=fuzzer` (and AddressSanitizer) into its own scratch path, `.build-fuzz`.
// Each harness is one executable whose `main` is libFuzzer's.

// A path dependency is named by its directory ("aqlm" in a clone, a worktree's name elsewhere).
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let parsers: Target.Dependency = .product(name: "AQLMParsers", package: root.lastPathComponent)

let harnesses = [
    "FuzzGGUF", "FuzzSafeTensors", "FuzzHFConfig", "FuzzTokenizerJSON", "FuzzTokenize", "FuzzPackedCheckpoint",
]

let package = Package(
    name: "aqlm-fuzz",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: "..")],
    targets: [
        // Scratch files, seed writing and the libFuzzer entry-point plumbing shared by every harness.
        .target(name: "FuzzSupport", dependencies: [parsers]),
    ] + harnesses.map { name in
        // No top-level code: libFuzzer's main calls LLVMFuzzerTestOneInput.
        .executableTarget(name: name, dependencies: ["FuzzSupport", parsers],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    },
    swiftLanguageModes: [.v5]
)
