//! Executables of this crate (examples, tests) find libminerva.so at run
//! time where it was found at build time (an rpath), so they run without
//! LD_LIBRARY_PATH. An application may do the same in its own build.rs.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MINERVA_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
