// \(t) target: see Package.swift for its role.
