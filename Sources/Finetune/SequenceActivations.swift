import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Hidden states of the calibration sequences, each [tokens × hidden] Float32 of one width: in
/// memory, or in a file of a given directory, read and written one sequence at a time.
///
/// Why a file and not a memory map: a map's resident pages count in the process's RSS until
/// unmapped, while a file read with pread sits in the page cache, which the kernel drops under
/// pressure. At Llama-3-8B's shapes and the default calibration (128 × 512 tokens × 4096) one
/// set is 1.07 GB and quantization keeps two or three. The file is unlinked as soon as it is
/// created (nothing is left behind, however the process ends) and lives while a value using it
/// does. Copies are copy-on-write: one that changes a sequence while another value shares the
/// file first copies the file.
public struct SequenceActivations: RandomAccessCollection, MutableCollection {
    public let width: Int
    private var memory: [[Float]]
    private var file: ActivationFile?
    /// Why a copy of a shared file failed (a setter cannot throw; `check()` reports it).
    private var copyFailure: String?

    /// `count` sequences of `width` zeros; in a file of `directory` when one is given.
    public init(count: Int, width: Int, directory: String? = nil) throws {
        self.width = width
        if let directory {
            memory = []
            file = try ActivationFile(count: count, width: width, directory: directory)
        } else {
            memory = Array(repeating: [Float](repeating: 0, count: width), count: count)
        }
    }

    /// Whether the sequences are in a file.
    public var isInFile: Bool { file != nil }

    /// Throws if reading or writing the file failed since it was made (e.g. a full disk): the
    /// values read since are not to be trusted. Call before saving results made from them.
    public func check() throws {
        if let failure = copyFailure ?? file?.failure { throw FinetuneError(failure) }
    }

    /// A plain range: indices that held a copy of the collection would make every write
    /// inside `for s in activations.indices` copy a shared file.
    public typealias Indices = Range<Int>

    public var startIndex: Int { 0 }
    public var endIndex: Int { file?.count ?? memory.count }

    public subscript(position: Int) -> [Float] {
        get {
            guard let file else { return memory[position] }
            return file.read(position)
        }
        set {
            precondition(newValue.count == width, "a sequence of \(newValue.count) values, expected \(width)")
            guard file != nil else { return memory[position] = newValue }
            if !isKnownUniquelyReferenced(&file!) {
                do { file = try file!.copy() } catch { return copyFailure = "\(error)" }
            }
            file!.write(newValue, at: position)
        }
    }
}

/// An unlinked file of `count` × `width` Float32 values.
final class ActivationFile {
    let count: Int
    let width: Int
    let directory: String
    private let descriptor: Int32
    /// The first I/O error; transfers stop after it (reads give zeros).
    private(set) var failure: String?

    init(count: Int, width: Int, directory: String) throws {
        self.count = count
        self.width = width
        self.directory = directory
        let path = (directory as NSString).appendingPathComponent("activations-\(UUID().uuidString).f32")
        descriptor = open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw FinetuneError("cannot create \(path): \(String(cString: strerror(errno)))") }
        unlink(path)
        guard ftruncate(descriptor, off_t(count * width * 4)) == 0 else {
            close(descriptor)
            throw FinetuneError("cannot size \(path) to \(count * width * 4) bytes: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    func read(_ index: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: width) { buffer, initialized in
            transfer(UnsafeMutableRawBufferPointer(buffer), at: index) { pread(descriptor, $0, $1, $2) }
            initialized = width
        }
    }

    func write(_ values: [Float], at index: Int) {
        var values = values
        values.withUnsafeMutableBytes { bytes in transfer(bytes, at: index) { pwrite(descriptor, $0, $1, $2) } }
    }

    func copy() throws -> ActivationFile {
        let other = try ActivationFile(count: count, width: width, directory: directory)
        for i in 0..<count { other.write(read(i), at: i) }
        return other
    }

    /// Moves one sequence's bytes with `io` (pread or pwrite), resuming after short transfers;
    /// on an error, zeros the buffer and records the failure.
    private func transfer(_ bytes: UnsafeMutableRawBufferPointer, at index: Int,
                          _ io: (UnsafeMutableRawPointer, Int, off_t) -> Int) {
        var done = 0
        while done < bytes.count && failure == nil {
            let n = io(bytes.baseAddress! + done, bytes.count - done, off_t(index * width * 4 + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                failure = "activation file in \(directory): " + (n < 0 ? String(cString: strerror(errno)) : "unexpected end")
            } else {
                done += n
            }
        }
        if failure != nil { bytes.initializeMemory(as: UInt8.self, repeating: 0) }
    }
}
