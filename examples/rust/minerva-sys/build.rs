//! Finds libminerva: MINERVA_LIB_DIR (a directory holding libminerva.so,
//! e.g. a CMake build directory) or else `pkg-config minerva` (honouring
//! PKG_CONFIG_PATH). Runs pkg-config as a process: no build dependencies.
use std::env;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).arg("minerva").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MINERVA_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Ok(dir) = env::var("MINERVA_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-lib=dylib=minerva");
        println!("cargo:libdir={dir}"); // DEP_MINERVA_LIBDIR for dependents (rpath)
        return;
    }
    let libs = pkg_config(&["--libs"]).unwrap_or_else(|| {
        panic!(
            "libminerva not found: install it (cmake --install / make install PREFIX=...) and set \
             PKG_CONFIG_PATH=<prefix>/lib/pkgconfig, or set MINERVA_LIB_DIR to a build directory"
        )
    });
    let mut libdir = None;
    for flag in libs.split_whitespace() {
        if let Some(d) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={d}");
            libdir.get_or_insert_with(|| d.to_string());
        } else if let Some(l) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={l}");
        }
    }
    if let Some(d) = libdir.or_else(|| pkg_config(&["--variable=libdir"])) {
        println!("cargo:libdir={d}");
    }
    if let Some(d) = pkg_config(&["--variable=datadir"]) {
        // where the installed bundled model lives: <datadir>/models/stories260K
        println!("cargo:rustc-env=MINERVA_DATADIR={d}");
    }
}
