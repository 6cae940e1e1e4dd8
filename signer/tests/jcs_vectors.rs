//! RFC 8785 conformance of the canonicalizer, from the RFC's published test data.

use std::fs;
use std::path::PathBuf;

use stella_signer::canonical;

fn dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/vectors/jcs")
}

#[test]
fn every_input_canonicalizes_to_its_output() {
    let mut checked = 0;
    for entry in fs::read_dir(dir().join("input")).expect("input dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        let input = fs::read(&path).expect("input");
        let expected = fs::read(dir().join("output").join(&name)).expect("output");
        let got = canonical::canonicalize(&input).expect("canonicalize");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "vector {name:?}"
        );
        // Canonical output is a fixed point.
        assert_eq!(
            canonical::canonicalize(&expected).expect("again"),
            expected,
            "{name:?}"
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} vectors found");
}

#[test]
fn appendix_b_numbers() {
    let table = fs::read_to_string(dir().join("numbers.tsv")).expect("numbers.tsv");
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (bits, expected) = line.split_once('\t').expect("tab-separated");
        let value = f64::from_bits(u64::from_str_radix(bits.trim(), 16).expect("hex bits"));
        let got = canonical::to_vec(&value).expect("finite numbers serialize");
        assert_eq!(
            String::from_utf8(got).expect("utf8"),
            expected.trim(),
            "bits {bits}"
        );
        checked += 1;
    }
    assert!(checked >= 20);
    let invalid =
        fs::read_to_string(dir().join("numbers-invalid.txt")).expect("numbers-invalid.txt");
    for bits in invalid.lines().filter(|l| !l.trim().is_empty()) {
        let value = f64::from_bits(u64::from_str_radix(bits.trim(), 16).expect("hex bits"));
        assert!(
            canonical::to_vec(&value).is_err(),
            "NaN/Infinity must not serialize: {bits}"
        );
    }
}
