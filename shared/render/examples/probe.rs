fn main() {
    let text = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let opts = serde_saphyr::options! { strict_booleans: true, legacy_octal_numbers: true };
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(&text, opts).unwrap();
    for d in docs {
        println!("{}", serde_json::to_string(&d).unwrap());
    }
}
