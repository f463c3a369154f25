//! Generates Rust bindings for libblkid (Debian: libblkid-dev, libclang-dev).
//!
//! Only the probing and wiping calls `blockdev::blkid` uses are allow-listed, so the
//! generated file stays small and reviewable.

use std::env;
use std::path::PathBuf;

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("2.30")
        .probe("blkid")
        .expect("libblkid not found: install libblkid-dev (scripts/install-deps)");

    let mut builder = bindgen::Builder::default()
        .header_contents("blkid_wrapper.h", "#include <blkid/blkid.h>\n")
        .allowlist_function("blkid_(new_probe|free_probe|probe_set_device|probe_enable_superblocks|probe_set_superblocks_flags|probe_enable_partitions|probe_set_partitions_flags|do_probe|do_safeprobe|do_wipe|probe_lookup_value|probe_has_value|probe_get_size)")
        .allowlist_var("BLKID_(SUBLKS|PARTS)_.*")
        .layout_tests(false)
        .generate_comments(false);
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder.generate().expect("bindgen could not parse <blkid/blkid.h> (is libclang-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("blkid_sys.rs")).expect("write blkid bindings");
    println!("cargo:rerun-if-changed=build.rs");
}
