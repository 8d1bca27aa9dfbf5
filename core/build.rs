//! Compiles INCRBYFLOAT's long double arithmetic (`c/long_double.c`).

fn main() {
    println!("cargo::rerun-if-changed=c/long_double.c");
    cc::Build::new().file("c/long_double.c").warnings(true).compile("strata_long_double");
}
