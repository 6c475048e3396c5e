package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.volume.Sizes;
import picocli.CommandLine.Model.CommandSpec;

import java.io.IOException;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;

/**
 * The {@code volume} subcommands through the control API, for when no data directory is given: the offline
 * commands in {@code VolumeCommand} call these. Each returns the exit code; failures are {@link ApiException}s.
 */
public final class OnlineVolume {
    private OnlineVolume() {
    }

    /** {@code POST /v1/volumes}: a file volume of {@code size} bytes, or the block device {@code device}. */
    public static int create(final CommandSpec spec, final ServerOptions server, final String name, final Long size,
                             final String device, final String description, final boolean readOnly)
        throws IOException {
        final ObjectNode body = ApiClient.object();
        body.put("name", name);
        if (size != null) {
            body.put("size", size);
        }
        if (device != null) {
            body.put("devicePath", device);
        }
        if (description != null && !description.isEmpty()) {
            body.put("description", description);
        }
        if (readOnly) {
            body.put("readOnly", true);
        }
        final JsonNode v;
        try (ApiClient api = server.connect()) {
            v = api.post("/v1/volumes", body);
        }
        final boolean isDevice = "device".equals(v.path("kind").asText());
        final PrintWriter out = spec.commandLine().getOut();
        out.println("created volume " + Output.text(v, "name") + ": " + Output.size(v, "size") + " "
            + Output.text(v, "kind") + (v.path("readOnly").asBoolean() ? ", read-only" : "")
            + (isDevice && v.path("path").isTextual() ? " on " + Output.text(v, "path") : ""));
        out.flush();
        return 0;
    }

    /** {@code GET /v1/volumes}: a table, or the API's JSON array. */
    public static int list(final CommandSpec spec, final ServerOptions server, final boolean json)
        throws IOException {
        final JsonNode volumes;
        final String url;
        try (ApiClient api = server.connect()) {
            volumes = api.get("/v1/volumes");
            url = api.baseUrl();
        }
        final PrintWriter out = spec.commandLine().getOut();
        if (json) {
            Output.json(out, volumes);
            return 0;
        }
        if (volumes.isEmpty()) {
            out.println("no volumes on the server at " + url + "; create one with: nbdtail volume create NAME"
                + " --size 20G");
            out.flush();
            return 0;
        }
        final List<String[]> table = new ArrayList<>();
        table.add(new String[] {"NAME", "SIZE", "ALLOCATED", "KIND", "READ-ONLY", "STATE", "CLIENTS",
            "DESCRIPTION"});
        for (final JsonNode v : volumes) {
            final JsonNode clients = v.path("clients");
            table.add(new String[] {Output.text(v, "name"), Output.size(v, "size"), Output.size(v, "allocatedBytes"),
                Output.text(v, "kind"), Output.yesNo(v, "readOnly"), Output.text(v, "state"),
                clients.isArray() ? Integer.toString(clients.size()) : "?",
                v.path("description").isTextual() ? Output.oneLine(v.path("description").asText()) : ""});
        }
        Output.table(out, table);
        return 0;
    }

    /** {@code GET /v1/volumes/{name}}: {@code key: value} lines, the layers, the access list and the clients. */
    public static int info(final CommandSpec spec, final ServerOptions server, final String name,
                           final boolean json) throws IOException {
        final JsonNode v;
        try (ApiClient api = server.connect()) {
            v = api.get("/v1/volumes/" + ApiClient.segment(name));
        }
        final PrintWriter out = spec.commandLine().getOut();
        if (json) {
            Output.json(out, v);
            return 0;
        }
        out.println("name:        " + Output.text(v, "name"));
        out.println("id:          " + Output.text(v, "id"));
        out.println("kind:        " + Output.text(v, "kind"));
        out.println("state:       " + Output.text(v, "state"));
        if (v.path("failure").isTextual()) {
            out.println("failure:     " + Output.text(v, "failure"));
        }
        out.println("size:        " + Output.bytes(v, "size"));
        out.println("allocated:   " + Output.bytes(v, "allocatedBytes"));
        out.println("path:        " + Output.text(v, "path"));
        out.println("read-only:   " + Output.yesNo(v, "readOnly"));
        out.println("description: " + (v.path("description").isTextual()
            ? Output.oneLine(v.path("description").asText()) : "?"));
        out.println("created:     " + Output.text(v, "created"));
        out.println("layers:      " + layers(v.path("layers")));
        out.println("acl:         " + Output.acl(v.path("acl")));
        final JsonNode clients = v.path("clients");
        if (clients.isArray() && !clients.isEmpty()) {
            out.println("clients:     " + clients.size());
            out.println();
            Output.clients(out, clients, name);
        } else {
            out.println("clients:     " + (clients.isArray() ? "none" : "?"));
        }
        out.flush();
        return 0;
    }

    /** {@code DELETE /v1/volumes/{name}[?force=true]}. */
    public static int delete(final CommandSpec spec, final ServerOptions server, final String name,
                             final boolean force) throws IOException {
        try (ApiClient api = server.connect()) {
            api.delete("/v1/volumes/" + ApiClient.segment(name) + (force ? "?force=true" : ""));
        } catch (final ApiException e) {
            if (e.status() == 409 && !force && e.getMessage().contains("client")) {
                throw e.withHint("to disconnect them and delete anyway: nbdtail volume delete " + name + " --force");
            }
            throw e;
        }
        spec.commandLine().getOut().println("deleted volume " + name + (force ? " (clients, if any, were"
            + " disconnected first)" : ""));
        spec.commandLine().getOut().flush();
        return 0;
    }

    /** {@code POST /v1/volumes/{name}/grow}. */
    static int grow(final CommandSpec spec, final ServerOptions server, final String name, final long size,
                    final boolean json) throws IOException {
        final ObjectNode body = ApiClient.object();
        body.put("size", size);
        final JsonNode v;
        try (ApiClient api = server.connect()) {
            v = api.post("/v1/volumes/" + ApiClient.segment(name) + "/grow", body);
        }
        final PrintWriter out = spec.commandLine().getOut();
        if (json) {
            Output.json(out, v);
            return 0;
        }
        final int clients = v.path("clients").size();
        out.println("grew volume " + name + " to " + (v.path("size").isNumber() ? Output.size(v, "size")
            : Sizes.format(size)) + (clients > 0 ? "; its " + clients + " connected client(s) see the new size"
            + " once they reconnect" : ""));
        out.flush();
        return 0;
    }

    /** The layer chain, bottom first: {@code base (file)}. */
    private static String layers(final JsonNode layers) {
        if (!layers.isArray()) {
            return "?";
        }
        final List<String> names = new ArrayList<>();
        for (final JsonNode layer : layers) {
            names.add(Output.text(layer, "name") + (layer.path("kind").isTextual() ? " (" + Output.text(layer,
                "kind") + ")" : ""));
        }
        return names.isEmpty() ? "none" : names.size() == 1 ? names.get(0)
            : String.join(", ", names) + " (bottom first)";
    }
}
