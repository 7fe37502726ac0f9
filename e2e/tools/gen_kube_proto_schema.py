#!/usr/bin/env python3
"""Writes e2e/src/kubesim/kube_proto.schema: the protobuf schema of the Kubernetes kinds kubesim
serves, so kubesim can decode `application/vnd.kubernetes.protobuf` request bodies into JSON.

Sources (both already in the cargo registry once the workspace has been built or fetched):
  * k8s-pb (prost-generated structs): message names, field tags, proto types, repeated/map-ness
    and nested message types, from the `#[prost(...)]` attributes;
  * k8s-openapi (the version in Cargo.lock, newest Kubernetes module): each field's exact JSON
    name (`"volumeID" => Field::Key_volume_id`), the Kubernetes definition name (`JSON`, not
    prost's `Json`), and whether a field is optional (`Option<..>`).

Regenerate (from the workspace root, after `cargo fetch`):
    python3 e2e/tools/gen_kube_proto_schema.py > e2e/src/kubesim/kube_proto.schema

Output format, one record a line:
    kind <apiVersion> <Kind> <message>      a top-level kind and its message
    message <name>                          starts a message; its fields follow
    <tag> <jsonName> <type>                 one field
where <type> is a scalar (string bool int32 int64 double bytes) or a message name, prefixed by
`[]` when repeated and `map:` for a map with string keys. The JSON name `-` marks a Go struct embedded inline: its fields
are spread into the parent object. A trailing `?` marks a field that is
optional in the Kubernetes API, whose zero value Go's protobuf encoder writes anyway and Go's JSON
encoder omits (`omitempty`), so the decoder drops it. Neither source says which optional fields
are Go pointers (whose explicit zero is meaningful); a field documented to default to a non-zero
number or to true must be one, so it gets no `?` and its zero (`replicas: 0`) is kept. Other
pointer fields lose an explicit zero (`runAsUser: 0`, `allowPrivilegeEscalation: false`).
"""

import glob
import os
import re
import sys

# The kinds kubesim serves (e2e/src/kubesim/resources.rs builtins), as (apiVersion, Kind).
KINDS = [
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ResourceQuota"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
]

# Short package names: the k8s-pb module path prefix that is dropped.
PREFIXES = [
    "api/",
    "apimachinery/pkg/apis/",
    "apimachinery/pkg/util/",
    "apimachinery/pkg/api/",
    "apimachinery/pkg/",
    "apiextensions_apiserver/pkg/apis/",
]

# Messages whose JSON form is not an object of their fields; the decoder knows each by name.
SPECIAL = {
    "meta.v1.Time",
    "meta.v1.MicroTime",
    "meta.v1.Duration",
    "meta.v1.FieldsV1",
    "runtime.RawExtension",
    "intstr.IntOrString",
    "resource.Quantity",
    "apiextensions.v1.JSON",
    "apiextensions.v1.JSONSchemaPropsOrArray",
    "apiextensions.v1.JSONSchemaPropsOrBool",
    "apiextensions.v1.JSONSchemaPropsOrStringArray",
}

# An optional number or bool documented to default to something other than its zero value is a
# Go pointer (a plain field could not tell an explicit zero from unset): its zero is kept.
NON_ZERO_DEFAULT = re.compile(r"(?i)\bdefaults? (?:to|is|value is) (?:-?[1-9]\d*s?|true)\b")

SCALARS = {"string", "bool", "int32", "int64", "double", "bytes"}


def registry_dir(crate):
    found = sorted(glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{crate}")))
    if not found:
        sys.exit(f"{crate} is not in the cargo registry: run `cargo fetch` (or add it to a Cargo.toml) first")
    return found[-1]


def openapi_version():
    lock = open("Cargo.lock").read()
    m = re.search(r'name = "k8s-openapi"\nversion = "([^"]+)"', lock)
    if not m:
        sys.exit("k8s-openapi not found in Cargo.lock: run from the workspace root")
    return m.group(1)


def short_package(module):
    """`api/core/v1` -> `core.v1`, `apimachinery/pkg/util/intstr` -> `intstr`."""
    for p in PREFIXES:
        if module.startswith(p):
            return module[len(p) :].replace("/", ".")
    return module.replace("/", ".")


def squash(name):
    """A field or type name with case and underscores removed, for matching across crates."""
    return name.replace("r#", "").replace("_", "").lower()


def read_openapi(root):
    """{(package, squashed type name): (definition name, {squashed field: (json, optional)})}."""
    out = {}
    for path in glob.glob(f"{root}/**/*.rs", recursive=True):
        text = open(path).read()
        head = re.match(r"// Generated from definition io\.k8s\.([\w.-]+)\.(\w+)\n", text)
        if not head:
            continue
        package = head.group(1).replace("-", "_").replace(".", "/")
        name = head.group(2)
        optional = {}
        m = re.search(r"pub struct " + name + r" \{\n(.*?)\n\}\n", text, re.S)
        if m:
            for f in re.finditer(r"((?:^    ///.*\n)*)^    pub (\w+): (.*),$", m.group(1), re.M):
                doc, rust, typ = f.group(1), f.group(2), f.group(3)
                pointer = typ in ("Option<bool>", "Option<i32>", "Option<i64>") and NON_ZERO_DEFAULT.search(doc)
                optional[rust] = typ.startswith("Option<") and not pointer
        fields = {}
        for f in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', text):
            json, rust = f.group(1), f.group(2)
            fields[squash(re.sub(r"[^\w]", "", json))] = (json, optional.get(rust, True))
            fields[squash(rust)] = (json, optional.get(rust, True))
        out[(short_package(package), name.lower())] = (name, fields)
    return out


def inlined(parent_fields, child):
    """Whether every field of the child message is a JSON field of the parent."""
    return bool(child) and all(squash(f[1]) in parent_fields or f[2] == "message" for f in child)


def module_of(path, src):
    rel = os.path.relpath(os.path.dirname(path), src)
    return rel.split(os.sep)


def resolve(type_text, module):
    """The message a Rust type names, as (module path list, struct name)."""
    inner = re.sub(r"\s|::prost::alloc::collections::|::prost::alloc::|::core::option::", "", type_text)
    inner = re.sub(r"boxed::Box<(.*)>", r"\1", inner.replace(",>", ">"))
    m = re.fullmatch(r"(?:Option|vec::Vec)<(.*)>|BTreeMap<string::String,(.*)>", inner)
    inner = m.group(1) or m.group(2)
    parts = inner.split("::")
    mod = list(module)
    while parts[0] == "super":
        mod.pop()
        parts.pop(0)
    return mod + parts[:-1], parts[-1]


def read_pb(src):
    """{(package, struct): [(tag, rust name, proto type, label, type text)]}."""
    out = {}
    for path in glob.glob(f"{src}/**/mod.rs", recursive=True):
        module = module_of(path, src)
        lines = open(path).read().split("\n")
        i = 0
        current = None
        while i < len(lines):
            line = lines[i]
            s = re.match(r"pub struct (\w+) \{", line)
            if s:
                current = []
                out[("/".join(module), s.group(1))] = current
            a = re.match(r"\s+#\[prost\((.*)\)\]$", line)
            if a and current is not None:
                attr = a.group(1)
                decl = ""
                i += 1
                while not decl.rstrip().endswith(",") or decl.count("<") != decl.count(">"):
                    decl += lines[i].strip() + " "
                    i += 1
                f = re.match(r"pub (\S+): (.*),\s*$", decl.strip())
                tag = re.search(r'tag = "(\d+)"', attr).group(1)
                kind = attr.split(",")[0].split(" = ")[0].strip()
                if kind == "btree_map":
                    kind = "map:" + re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                label = "repeated" if ", repeated," in attr + "," else "optional"
                current.append((int(tag), f.group(1), kind, label, f.group(2), module))
                continue
            if line.startswith("}"):
                current = None
            i += 1
    return out


def main():
    pb_src = registry_dir("k8s-pb-0.9.0") + "/src"
    ver = openapi_version()
    oa_root = registry_dir(f"k8s-openapi-{ver}") + "/src"
    newest = sorted(d for d in os.listdir(oa_root) if re.match(r"v1_\d+$", d))[-1]
    openapi = read_openapi(f"{oa_root}/{newest}")
    pb = read_pb(pb_src)
    by_short = {(short_package(m), s): (m, s) for (m, s) in pb}

    def display(module, struct):
        pkg = short_package("/".join(module))
        oa = openapi.get((pkg, struct.lower()))
        return pkg, (oa[0] if oa else struct), oa

    def kind_message(api_version, kind):
        group, _, version = api_version.rpartition("/")
        group = group.split(".")[0] if group else "core"
        key = (f"{group}.{version}", kind)
        if key not in by_short:
            sys.exit(f"no k8s-pb message for {api_version} {kind} (looked for {key})")
        return by_short[key]

    warnings = []
    inline_names = {}
    emitted = {}
    order = []
    todo = [kind_message(v, k) for v, k in KINDS]
    while todo:
        module_s, struct = todo.pop(0)
        pkg, name, oa = display(module_s.split("/"), struct)
        full = f"{pkg}.{name}"
        oa = oa or inline_names.get(full)
        if full in emitted:
            continue
        fields = []
        for tag, rust, kind, label, type_text, module in sorted(pb[(module_s, struct)]):
            if kind in ("message", "map:message"):
                mod, target = resolve(type_text, module)
                tpkg, tname, _ = display(mod, target)
                typ = f"{tpkg}.{tname}"
            elif kind.startswith("map:"):
                typ = kind[4:]
            else:
                typ = kind
                if typ not in SCALARS:
                    sys.exit(f"{full}.{rust}: unknown proto type {kind}")
            if kind.startswith("map:"):
                typ = "map:" + typ
            elif label == "repeated":
                typ = "[]" + typ
            found = oa[1].get(squash(rust)) if oa else None
            if found:
                json_name, optional = found
            elif full in SPECIAL:
                json_name, optional = rust.replace("r#", ""), True
            elif kind == "message" and oa and inlined(oa[1], pb[("/".join(mod), target)]):
                # A Go struct embedded with `json:",inline"`: its own message on the wire,
                # its fields spread into the parent in JSON.
                json_name, optional = "-", False
                inline_names[typ] = oa
            else:
                warnings.append(f"{full}.{rust} (tag {tag}): not in k8s-openapi {newest}, left out")
                continue
            if kind in ("message", "map:message"):
                todo.append(("/".join(mod), target))
            if optional and typ in SCALARS:
                typ += "?"
            fields.append(f"{tag} {json_name} {typ}")
        emitted[full] = fields
        order.append(full)

    print("# Generated by e2e/tools/gen_kube_proto_schema.py from k8s-pb 0.9.0 and")
    print(f"# k8s-openapi {ver} ({newest}); do not edit. Regenerate from the workspace root with:")
    print("#   python3 e2e/tools/gen_kube_proto_schema.py > e2e/src/kubesim/kube_proto.schema")
    for v, k in KINDS:
        module_s, struct = kind_message(v, k)
        pkg, name, _ = display(module_s.split("/"), struct)
        print(f"kind {v} {k} {pkg}.{name}")
    for full in sorted(order):
        print(f"message {full}")
        for f in emitted[full]:
            print(f)
    for w in warnings:
        print("warning:", w, file=sys.stderr)


if __name__ == "__main__":
    main()
