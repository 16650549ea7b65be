//! Builds the C++ shim for dlib's HOG face detector (src/hog.cpp). dlib itself is
//! linked by the dlib-face-recognition crate; its headers come from libdlib-dev (or the
//! sysroot when cross-compiling, through CXXFLAGS_<target>).

fn main() {
    println!("cargo:rerun-if-changed=src/hog.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/hog.cpp")
        .flag("-std=c++14")
        .flag_if_supported("-Wno-deprecated-copy")
        .opt_level(2)
        .compile("lockerd_hog");
}
