//! Cap'n Proto code generation.
//!
//! The generated Rust code is kept in the tree (`src/record/record_capnp.rs`) so
//! that a machine with only the Rust toolchain can build Orcastra: the schema
//! compiler (`capnp`) is a C++ program that a fresh machine does not have.
//! When `capnp` is on the PATH, this script regenerates the code from
//! `schema/` and compares it with the kept copy, so a schema change cannot drift
//! from the code silently. CI installs Debian's `capnproto` and runs this check.
//!
//! * mismatch, `ORCASTRA_CAPNP_UPDATE=1`: the kept copy is rewritten.
//! * mismatch otherwise: the build fails and says how to update.

use std::path::{Path, PathBuf};
use std::process::Command;

const SCHEMA: &str = "schema/record.capnp";
const KEPT: &str = "src/record/record_capnp.rs";

fn main() {
    println!("cargo:rerun-if-changed={SCHEMA}");
    println!("cargo:rerun-if-changed={KEPT}");
    println!("cargo:rerun-if-env-changed=ORCASTRA_CAPNP_UPDATE");
    println!("cargo:rerun-if-env-changed=PATH");

    if Command::new("capnp").arg("--version").output().is_err() {
        // No schema compiler here: build from the kept copy.
        return;
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    capnpc::CompilerCommand::new()
        .src_prefix("schema")
        .default_parent_module(vec!["record".into()])
        .file(SCHEMA)
        .output_path(&out_dir)
        .run()
        .expect("capnp failed to compile schema/record.capnp");

    let fresh = std::fs::read_to_string(out_dir.join("record_capnp.rs"))
        .expect("capnpc wrote record_capnp.rs");
    let kept = std::fs::read_to_string(KEPT).unwrap_or_default();
    if fresh == kept {
        return;
    }
    if std::env::var_os("ORCASTRA_CAPNP_UPDATE").is_some_and(|v| v == "1") {
        std::fs::write(Path::new(KEPT), fresh).expect("write the regenerated schema code");
        println!("cargo:warning={KEPT} regenerated from {SCHEMA}");
        return;
    }
    panic!(
        "{KEPT} does not match {SCHEMA} as compiled by the capnp on this PATH. \
         Regenerate it with `ORCASTRA_CAPNP_UPDATE=1 cargo build` and commit the result \
         (CI compares against Debian's capnproto package)."
    );
}
