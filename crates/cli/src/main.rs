mod docker;

fn main() {}
