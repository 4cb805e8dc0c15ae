import Checkpoint
import Foundation
import Tokenizer
import XCTest

/// llama.cpp's reference files (../shared/data) and the cached models' tokenizers, shared by the
/// tests that hold our tokenizer to llama.cpp's output on a real model.
enum ReferenceData {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let dataDirectory = packageRoot.appendingPathComponent("../shared/data").standardized

    /// The tokenizer of the GGUF at `path`, or nil when the model is not installed.
    static func loadTokenizer(_ path: String) -> Result<BPETokenizer, Error>? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return Result { try BPETokenizer(spec: GGUFFile(path: path).tokenizerSpec()) }
    }

    static func unwrap(_ loaded: Result<BPETokenizer, Error>?) throws -> BPETokenizer {
        guard let loaded else { throw XCTSkip("model not installed: run tools/setup.sh") }
        return try loaded.get()
    }

    static func file(_ relative: String) throws -> [UInt8] {
        let url = dataDirectory.appendingPathComponent(relative)
        guard let data = FileManager.default.contents(atPath: url.path) else { throw XCTSkip("\(url.path) absent") }
        return [UInt8](data)
    }

    static func wikiTest() throws -> [UInt8] { try file("wikitext-2/wiki.test.raw") }

    /// The ids of a reference file (one per line), checked to be the `count` its README states.
    static func ids(_ relative: String, count: Int) throws -> [Int] {
        let expected = String(decoding: try file(relative), as: UTF8.self).split(whereSeparator: \.isNewline).map { Int($0)! }
        XCTAssertEqual(expected.count, count, relative)
        return expected
    }

    /// Fails with the first differing index and the text around it, rather than two 300k-element arrays.
    static func assertSameIds(_ ids: [Int], _ expected: [Int], tokenizer t: BPETokenizer,
                              file: StaticString = #filePath, line: UInt = #line) {
        guard ids != expected else { return }
        let common = min(ids.count, expected.count)
        let i = (0..<common).first { ids[$0] != expected[$0] } ?? common
        let around = max(0, i - 8)..<min(i + 8, expected.count)
        XCTFail("""
            \(ids.count) ids vs \(expected.count) reference ids; first difference at index \(i)
            ours:      \(Array(ids[around.clamped(to: 0..<ids.count)]))
            reference: \(Array(expected[around]))
            text:      \(t.decode(Array(expected[around])).debugDescription)
            """, file: file, line: line)
    }
}
