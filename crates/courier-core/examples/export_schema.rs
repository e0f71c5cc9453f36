//! Prints the JSON Schema of the event catalogue (envelope, metadata and every event type's
//! data), from which the TypeScript and Python types are generated:
//! `cargo run -q -p courier-core --example export_schema > schema.json`.

fn main() {
    let schema = courier_core::event::catalogue_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("schema serialises")
    );
}
