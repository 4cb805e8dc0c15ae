import XCTest
import Foundation
import Checkpoint

/// Inputs found by fuzzing (tools/fuzz.sh), minimized: each used to crash, hang or exhaust
/// memory, and must now be refused with one line naming the file and the field.
final class FuzzRegressionTests: TemporaryDirectoryTestCase {
    func config(_ members: String) -> String {
        """
        {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 8, "vocab_size": 10,
         "num_hidden_layers": 1, \(members)}
        """
    }

    func assertRefused(_ text: String, naming field: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try HuggingFaceConfig(json: try JSONValue(parsing: text), path: "/m/config.json"),
                             file: file, line: line) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("/m/config.json: ") && message.contains(field), message, file: file, line: line)
        }
    }

    /// heads × head_dim overflowed Int when listing the model's tensors (a trap).
    func testHugeHeadDimIsRefused() {
        assertRefused(config(#""num_attention_heads": 3, "head_dim": 4611686018427387904"#), naming: "head_dim")
    }

    /// A corrupt layer count had every reader list its tensors' names for minutes (a hang).
    func testHugeLayerCountIsRefused() {
        assertRefused(config(#""num_hidden_layers": 100000000"#), naming: "num_hidden_layers")
        let largest = try? HuggingFaceConfig(json: try JSONValue(parsing: config(#""num_hidden_layers": 4096"#)), path: "c")
        XCTAssertEqual(largest?.llama.numLayers, 4096)
    }

    /// Sizes beyond 2^24 (as GGUF bounds them) would make vocab × hidden products overflow downstream.
    func testHugeSizesAreRefused() {
        assertRefused(config(#""vocab_size": 1e15"#), naming: "vocab_size")
        assertRefused(config(#""intermediate_size": 16777217"#), naming: "intermediate_size")
    }

    /// More heads than hidden units gave a default head_dim of 0: tensors with an empty dimension.
    func testZeroDefaultHeadDimIsRefused() {
        assertRefused(config(#""hidden_size": 2, "num_attention_heads": 4"#), naming: "head_dim")
    }
}
