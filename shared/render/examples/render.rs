fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let r = convoy_render::Renderer::new(std::path::Path::new(&dir));
    match r.render(std::path::Path::new("")) {
        Ok(o) => print!("{}", convoy_render::to_yaml(&o)),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1)
        }
    }
}
