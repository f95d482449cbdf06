//! What the service provider is: its resource types and the discovery documents
//! (RFC 7644 §4: `/ServiceProviderConfig`, `/Schemas`, `/ResourceTypes`; RFC 7643 §5–§7).
//!
//! The schemas describe the attributes this server knows; it stores others a client sends
//! as they are (it does not reject unknown attributes), except the ones listed as dropped.

use serde_json::{json, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The most resources one list response holds (`filter.maxResults`); a larger `count` is
/// lowered to it.
pub const MAX_RESULTS: usize = 200;

/// A kind of resource this server provides.
#[derive(Debug, Clone, Copy)]
pub struct ResourceKind {
    /// `meta.resourceType`, and the kind in the store.
    pub name: &'static str,
    /// The collection's path below the base URL, e.g. `/Users`.
    pub endpoint: &'static str,
    pub schema: &'static str,
    pub extensions: &'static [&'static str],
    /// The attribute that must be present (and be a non-empty string).
    pub required: &'static str,
    /// The attribute whose value is unique (case-insensitively) among resources of the kind.
    pub unique: Option<&'static str>,
    /// Attribute names in their canonical case: a client's `username` is stored as `userName`.
    pub attributes: &'static [&'static str],
    /// Attributes a client cannot set (`mutability: readOnly`), ignored in PUT and POST
    /// bodies and refused (`mutability`) as a PATCH path.
    pub read_only: &'static [&'static str],
    /// Attributes accepted and not stored (`password`: this demo authenticates no user).
    pub dropped: &'static [&'static str],
}

pub const USER: ResourceKind = ResourceKind {
    name: "User",
    endpoint: "/Users",
    schema: USER_SCHEMA,
    extensions: &[ENTERPRISE_USER],
    required: "userName",
    unique: Some("userName"),
    attributes: &[
        "externalId",
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "emails",
        "phoneNumbers",
        "addresses",
    ],
    read_only: &["id", "meta", "schemas", "groups"],
    dropped: &["password"],
};

pub const GROUP: ResourceKind = ResourceKind {
    name: "Group",
    endpoint: "/Groups",
    schema: GROUP_SCHEMA,
    extensions: &[],
    required: "displayName",
    unique: None,
    attributes: &["externalId", "displayName", "members"],
    read_only: &["id", "meta", "schemas"],
    dropped: &[],
};

pub const KINDS: [ResourceKind; 2] = [USER, GROUP];

/// `GET /ServiceProviderConfig` (RFC 7643 §5).
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "Authorization: Bearer with the token the server was started with (--token)",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

/// `GET /ResourceTypes` (RFC 7643 §6).
pub fn resource_types(base: &str) -> Vec<Value> {
    KINDS
        .iter()
        .map(|kind| {
            let extensions: Vec<Value> = kind
                .extensions
                .iter()
                .map(|schema| json!({ "schema": schema, "required": false }))
                .collect();
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": kind.name,
                "name": kind.name,
                "endpoint": kind.endpoint,
                "description": format!("{}s, at {}", kind.name, kind.endpoint),
                "schema": kind.schema,
                "schemaExtensions": extensions,
                "meta": {
                    "resourceType": "ResourceType",
                    "location": format!("{base}/ResourceTypes/{}", kind.name),
                },
            })
        })
        .collect()
}

/// `GET /Schemas` (RFC 7643 §7).
pub fn schemas(base: &str) -> Vec<Value> {
    let user = vec![
        string(
            "userName",
            "Unique identifier for the user, case-insensitive",
        )
        .set("required", json!(true))
        .set("uniqueness", json!("server")),
        complex(
            "name",
            "The components of the user's name",
            false,
            vec![
                string("formatted", "The full name"),
                string("familyName", "The family name"),
                string("givenName", "The given name"),
                string("middleName", "The middle name(s)"),
                string("honorificPrefix", "e.g. Ms."),
                string("honorificSuffix", "e.g. III"),
            ],
        ),
        string("displayName", "The name to display"),
        string("nickName", "The casual name"),
        attribute("profileUrl", "reference", "A URI of an online profile")
            .set("referenceTypes", json!(["external"])),
        string("title", "The user's title"),
        string(
            "userType",
            "The relationship to the organization, e.g. Employee",
        ),
        string("preferredLanguage", "e.g. en-US"),
        string("locale", "e.g. en-US, for localizing dates and numbers"),
        string("timezone", "e.g. Europe/Paris"),
        attribute("active", "boolean", "Whether the user may log in"),
        complex(
            "emails",
            "Email addresses",
            true,
            vec![
                string("value", "The address"),
                string("display", "A label for display"),
                string("type", "work, home or other")
                    .set("canonicalValues", json!(["work", "home", "other"])),
                attribute("primary", "boolean", "The preferred address"),
            ],
        ),
        complex(
            "phoneNumbers",
            "Phone numbers",
            true,
            vec![
                string("value", "The number"),
                string("display", "A label for display"),
                string("type", "work, home, mobile, fax, pager or other").set(
                    "canonicalValues",
                    json!(["work", "home", "mobile", "fax", "pager", "other"]),
                ),
                attribute("primary", "boolean", "The preferred number"),
            ],
        ),
        complex(
            "addresses",
            "Physical mailing addresses",
            true,
            vec![
                string("formatted", "The full address"),
                string("streetAddress", "Street, house number"),
                string("locality", "City"),
                string("region", "State or region"),
                string("postalCode", "Postal code"),
                string("country", "ISO 3166-1 alpha-2 code"),
                string("type", "work, home or other")
                    .set("canonicalValues", json!(["work", "home", "other"])),
                attribute("primary", "boolean", "The preferred address"),
            ],
        ),
    ];
    let group = vec![
        string("displayName", "The name of the group").set("required", json!(true)),
        complex(
            "members",
            "The members of the group",
            true,
            vec![
                string("value", "The id of the member").set("mutability", json!("immutable")),
                attribute("$ref", "reference", "The URI of the member")
                    .set("referenceTypes", json!(["User", "Group"]))
                    .set("mutability", json!("immutable")),
                string("display", "A name for display"),
                string("type", "User or Group")
                    .set("canonicalValues", json!(["User", "Group"]))
                    .set("mutability", json!("immutable")),
            ],
        ),
    ];
    let enterprise = vec![
        string("employeeNumber", "Assigned by the organization"),
        string("costCenter", "The cost center"),
        string("organization", "The organization"),
        string("division", "The division"),
        string("department", "The department"),
        complex(
            "manager",
            "The user's manager",
            false,
            vec![
                string("value", "The id of the manager's User"),
                attribute("$ref", "reference", "The URI of the manager's User")
                    .set("referenceTypes", json!(["User"])),
                string("displayName", "The manager's name").set("mutability", json!("readOnly")),
            ],
        ),
    ];
    [
        (USER_SCHEMA, "User", "User accounts", user),
        (GROUP_SCHEMA, "Group", "Groups of users", group),
        (
            ENTERPRISE_USER,
            "EnterpriseUser",
            "Enterprise user",
            enterprise,
        ),
    ]
    .into_iter()
    .map(|(id, name, description, attributes)| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": id,
            "name": name,
            "description": description,
            "attributes": attributes,
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base}/Schemas/{id}"),
            },
        })
    })
    .collect()
}

/// Sets one characteristic of an attribute definition.
trait Set {
    fn set(self, key: &str, value: Value) -> Self;
}

impl Set for Value {
    fn set(mut self, key: &str, value: Value) -> Self {
        self[key] = value;
        self
    }
}

/// An attribute with RFC 7643 §2.2's defaults.
fn attribute(name: &str, kind: &str, description: &str) -> Value {
    let mut a = json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    });
    if kind == "string" || kind == "reference" {
        a["caseExact"] = json!(false);
    }
    a
}

fn string(name: &str, description: &str) -> Value {
    attribute(name, "string", description)
}

fn complex(name: &str, description: &str, multi_valued: bool, sub: Vec<Value>) -> Value {
    attribute(name, "complex", description)
        .set("multiValued", json!(multi_valued))
        .set("subAttributes", Value::Array(sub))
}
