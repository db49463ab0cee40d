"""What the installation tells about itself: version, users, licenses, metadata blocks,
collections.
"""

from __future__ import annotations

from werkzeug.routing import Rule

from .. import metadatablocks as mb
from .answers import ApiError, ok
from .settings import LICENSE_SETS


class InstallationEndpoints:
    """Mixed into DataverseSandbox: what the installation tells about itself."""

    def info_version(self, request):
        return ok({"version": self.settings.version, "build": "sandbox"})

    def user_identifier(self, user) -> str:
        return "@" + {self.settings.api_token: "depositor", self.settings.admin_token:
                      "dataverseAdmin", self.settings.other_token: "stranger"}[user]

    def users_me(self, request):
        user = self.require_user(request)
        name = self.user_identifier(user)[1:]
        return ok({"id": hash(name) % 1000, "identifier": f"@{name}",
                   "displayName": name, "superuser": self.is_super(user)})

    @property
    def license_list(self) -> dict:
        return LICENSE_SETS[self.settings.license_set]

    def find_license(self, name: str | None, uri: str | None) -> tuple[str, str] | None:
        """By URI first, then by name (JsonParser.parseLicense, LicenseServiceBean)."""
        for lic_name, lic_uri in self.license_list.items():
            if uri is not None and uri == lic_uri:
                return lic_name, lic_uri
        for lic_name, lic_uri in self.license_list.items():
            if name is not None and name == lic_name:
                return lic_name, lic_uri
        return None

    def licenses(self, request):
        return ok([{"id": i, "name": name, "uri": uri, "active": True,
                    "isDefault": i == 1} for i, (name, uri) in
                   enumerate(self.license_list.items(), 1)])

    def metadatablocks_list(self, request, collection: str | None = None):
        with_fields = request.args.get("returnDatasetFieldTypes", "").lower() == "true"
        out = []
        for i, (name, types) in enumerate(self.metadata_types(collection).items(), 1):
            block = mb.block_json(i, name, types)
            if not with_fields:
                block.pop("fields")
            out.append(block)
        return ok(out)

    def metadatablock_view(self, request, name):
        for i, (block_name, types) in enumerate(self.metadata_types().items(), 1):
            if name in (block_name, str(i)):
                return ok(mb.block_json(i, block_name, types))
        raise ApiError(404, f"Can't find metadata block '{name}'")

    def collection_blocks(self, request, alias):
        self.user(request)
        if alias not in (self.settings.collection, "root"):
            raise ApiError(404, f"Can't find dataverse with identifier='{alias}'")
        # With the collection's input levels: isRequired = required in the collection or
        # in the installation (JsonPrinter).
        return self.metadatablocks_list(request, alias)

    def collection_view(self, request, alias):
        self.user(request)
        if alias not in (self.settings.collection, "root"):
            raise ApiError(404, f"Can't find dataverse with identifier='{alias}'")
        data = {"id": 1 if alias == "root" else 2, "alias": alias, "name": alias,
                "dataverseType": "UNCATEGORIZED"}
        if self.settings.dataset_file_limit:  # 6.7: the collection's, else the default
            data["effectiveDatasetFileCountLimit"] = self.settings.dataset_file_limit
        return ok(data)

    def metadata_types(self, collection: str | None = None) -> dict:
        s = self.settings
        return mb.blocks_for(s.citation, s.required_blocks, s.extra_blocks,
                             s.input_levels.get(collection, ()))

    def _parse_check(self, fields: list[dict]) -> None:
        types = self.metadata_types()
        try:
            for f in fields:
                mb.check_values(types, f)
        except mb.ParseError as exc:
            raise ApiError(400, f"Error parsing Json: {exc}") from None

    def _validate(self, fields: dict, blocks: dict, collection: str) -> None:
        self._parse_check([*fields.values(), *(f for b in blocks.values() for f in b.values())])
        missing = mb.missing_required(self.metadata_types(collection),
                                      {"citation": fields, **blocks})
        if missing:
            raise ApiError(400, "Validation Failed: " + " ".join(missing))


RULES = [
    Rule("/api/info/version", endpoint="info_version", methods=["GET"]),
    Rule("/api/users/:me", endpoint="users_me", methods=["GET"]),
    Rule("/api/licenses", endpoint="licenses", methods=["GET"]),
    Rule("/api/metadatablocks", endpoint="metadatablocks_list", methods=["GET"]),
    Rule("/api/metadatablocks/<name>", endpoint="metadatablock_view", methods=["GET"]),
    Rule("/api/dataverses/<alias>", endpoint="collection_view", methods=["GET"]),
    Rule("/api/dataverses/<alias>/metadatablocks", endpoint="collection_blocks",
         methods=["GET"]),
]
