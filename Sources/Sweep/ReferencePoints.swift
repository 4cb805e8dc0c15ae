import Foundation

/// Points measured by another tool, read from a CSV file with a header row:
///
///     method,bits_per_weight,ppl,kld[,ppl_stderr][,top1][,note]
///
/// `kld` may be an empty cell (not measured); `top1` is a percentage (0-100), as llama.cpp
/// prints "same top p"; `note` is free text kept with the row (e.g. "100 chunks"). Lines that
/// start with `#` and blank lines are skipped. Fields may be double-quoted (RFC 4180) to hold
/// commas. Every problem is one line naming the file, the line and the column.
public enum ReferencePoints {
    static let required = ["method", "bits_per_weight", "ppl", "kld"]
    static let optional = ["ppl_stderr", "top1", "note"]

    public static func read(path: String) throws -> [SweepRow] {
        guard FileManager.default.fileExists(atPath: path) else { throw SweepError("--reference \(path): no such file") }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw SweepError("--reference \(path): cannot read it as UTF-8 text")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws -> [SweepRow] {
        var header: [String: Int]?
        var rows: [SweepRow] = []
        // "\r\n" is one Character in Swift, so splitting at newlines handles both line ends.
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let lineNumber = index + 1
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            let fields = try splitFields(String(line), source: source, line: lineNumber)
            guard let columns = header else {
                header = try readHeader(fields, source: source, line: lineNumber)
                continue
            }
            rows.append(try readRow(fields, columns: columns, source: source, line: lineNumber))
        }
        guard header != nil else { throw SweepError("\(source): empty; expected a header line \(required.joined(separator: ","))") }
        guard !rows.isEmpty else { throw SweepError("\(source): a header but no points") }
        return rows
    }

    static func readHeader(_ fields: [String], source: String, line: Int) throws -> [String: Int] {
        var columns: [String: Int] = [:]
        for (i, f) in fields.enumerated() {
            let name = f.trimmingCharacters(in: .whitespaces).lowercased()
            guard required.contains(name) || optional.contains(name) else {
                throw SweepError("\(source) line \(line): unknown column '\(name)' (columns: \((required + optional).joined(separator: ", ")))")
            }
            guard columns[name] == nil else { throw SweepError("\(source) line \(line): column '\(name)' appears twice") }
            columns[name] = i
        }
        for name in required where columns[name] == nil {
            throw SweepError("\(source) line \(line): no '\(name)' column (needs \(required.joined(separator: ", ")))")
        }
        return columns
    }

    static func readRow(_ fields: [String], columns: [String: Int], source: String, line: Int) throws -> SweepRow {
        guard fields.count == columns.count else {
            throw SweepError("\(source) line \(line): \(fields.count) fields, the header has \(columns.count)")
        }
        func cell(_ name: String) -> String? {
            columns[name].map { fields[$0].trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        func number(_ name: String, required: Bool, range: ClosedRange<Double>) throws -> Double? {
            guard let text = cell(name) else {
                if required { throw SweepError("\(source) line \(line): empty \(name)") }
                return nil
            }
            guard let value = Double(text), value.isFinite else {
                throw SweepError("\(source) line \(line): \(name) '\(text)' is not a number")
            }
            guard range.contains(value) else {
                throw SweepError("\(source) line \(line): \(name) \(text) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }
        guard let method = cell("method") else { throw SweepError("\(source) line \(line): empty method") }
        let bits = try number("bits_per_weight", required: true, range: 0.01...64)!
        let ppl = try number("ppl", required: true, range: 1...Double.greatestFiniteMagnitude)!
        let kld = try number("kld", required: false, range: 0...Double.greatestFiniteMagnitude)
        let stderr = try number("ppl_stderr", required: false, range: 0...Double.greatestFiniteMagnitude)
        let top1 = try number("top1", required: false, range: 0...100)
        return SweepRow(scheme: method, family: .external, bitsPerWeight: bits, ppl: ppl, pplStderr: stderr, kldMean: kld,
                        top1Agreement: top1.map { $0 / 100 }, note: cell("note"))
    }

    /// One CSV line split at commas outside double quotes; "" inside quotes is one quote.
    static func splitFields(_ line: String, source: String, line number: Int) throws -> [String] {
        var fields: [String] = []
        var field = ""
        var quoted = false
        var chars = line.makeIterator()
        while let c = chars.next() {
            if quoted {
                if c == "\"" {
                    // A doubled quote is a literal quote; a single one closes the field's quoting.
                    var lookahead = chars
                    if lookahead.next() == "\"" {
                        field.append("\"")
                        chars = lookahead
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == "\"" && field.trimmingCharacters(in: .whitespaces).isEmpty {
                quoted = true
                field = ""
            } else if c == "," {
                fields.append(field)
                field = ""
            } else {
                field.append(c)
            }
        }
        guard !quoted else { throw SweepError("\(source) line \(number): unterminated quoted field") }
        fields.append(field)
        return fields
    }
}
