//! The TALQ adapter's output validates against the TALQ 2.7.1 data model
//! (`../shared/talq/talq-data-model-2-7-1-online.json`), and ERIOP's table of attribute types
//! says what the document says.

use eriop_domain::device::{talq, FunctionDesc};
use serde_json::{json, Value};
use uuid::Uuid;

fn model() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/talq/talq-data-model-2-7-1-online.json"
    );
    serde_json::from_str(
        &std::fs::read_to_string(path).expect("the TALQ data model in ../shared/talq"),
    )
    .unwrap()
}

/// A validator of one `components/schemas` object of the document.
fn validator(model: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({ "$ref": format!("#/components/schemas/{name}"), "components": model["components"] });
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance:#}");
}

#[test]
fn attribute_log_data_device_and_override_command_validate_against_talq_2_7_1() {
    let model = model();
    let log = validator(&model, "AttributeLogData");
    let device = Uuid::new_v4();
    let at = "2026-11-26T10:00:00.000Z";
    for (function_type, attribute, raw) in [
        ("LampMonitorFunction", "activePower", json!(41.5)),
        ("LampMonitorFunction", "lampFailure", json!(true)),
        ("LampActuatorFunction", "actualLightState", json!(80)),
        ("BasicFunction", "swVersion", json!("1.2.3")),
        ("LampMonitorFunction", "vendorBlob", json!({"a": [1, 2]})),
        ("LampMonitorFunction", "activePower", json!("not a number")),
    ] {
        let value = talq::typed_value(talq::attribute_type(function_type, attribute), &raw);
        let record = talq::attribute_log_data(device, "f001", attribute, &value, at);
        assert_valid(&log, &serde_json::to_value(&record).unwrap(), attribute);
    }
    // The check can fail: a record without its attribute name is not TALQ.
    let mut broken = serde_json::to_value(talq::attribute_log_data(
        device,
        "f001",
        "x",
        &talq::typed_value(None, &json!(1)),
        at,
    ))
    .unwrap();
    broken.as_object_mut().unwrap().remove("attributeName");
    assert!(!log.is_valid(&broken));

    let functions = vec![
        FunctionDesc::parse("lampMonitor001", "LampMonitorFunction").unwrap(),
        FunctionDesc::parse("comm001", "CommunicationFunction").unwrap(),
    ];
    assert_valid(
        &validator(&model, "Device"),
        &talq::device(device, "Pole 1", "Street light", &functions),
        "Device",
    );

    let overrides = validator(&model, "OverrideCommand");
    assert_valid(
        &overrides,
        &talq::override_command(
            device,
            Some(40),
            at,
            Some("2026-11-26T12:00:00.000Z"),
            Some(5),
            "7",
        ),
        "override",
    );
    assert_valid(
        &overrides,
        &talq::override_command(device, None, at, None, None, "8"),
        "end of override",
    );
}

#[test]
fn the_attribute_types_eriop_knows_are_the_documents() {
    let model = model();
    let schemas = &model["components"]["schemas"];
    for (function, attribute, ty) in talq::ATTRIBUTE_TYPES {
        let property = &schemas[*function]["allOf"][1]["properties"][*attribute];
        let declared = property["allOf"]
            .as_array()
            .and_then(|parts| parts.iter().find_map(|p| p["$ref"].as_str()))
            .or(property["$ref"].as_str())
            .unwrap_or_else(|| panic!("{function}.{attribute} is not in the TALQ document"));
        assert_eq!(
            declared,
            format!("#/components/schemas/{}", ty.talq_name()),
            "{function}.{attribute}"
        );
    }
    for function_type in eriop_domain::device::FUNCTION_TYPES {
        assert!(schemas[function_type].is_object(), "{function_type}");
    }
}
