package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import picocli.CommandLine.Model.CommandSpec;

import java.io.IOException;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;

/** The {@code nbdtail snapshot} commands through a running server's control API. */
public final class OnlineSnapshot {
    private OnlineSnapshot() {
    }

    private static String base(final String volume) {
        return "/v1/volumes/" + ApiClient.segment(volume) + "/snapshots";
    }

    public static int create(final CommandSpec spec, final ServerOptions server, final String volume,
                             final String name, final boolean json) throws IOException {
        try (ApiClient api = server.connect()) {
            final ObjectNode body = ApiClient.object();
            body.put("name", name);
            final JsonNode created = api.post(base(volume), body);
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, created);
            } else {
                out.println("took snapshot " + volume + "@" + name + " at " + created.path("created").asText());
            }
            out.flush();
        }
        return 0;
    }

    public static int list(final CommandSpec spec, final ServerOptions server, final String volume,
                           final boolean json) throws IOException {
        try (ApiClient api = server.connect()) {
            final JsonNode snapshots = api.get(base(volume));
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, snapshots);
            } else if (snapshots.isEmpty()) {
                out.println("volume " + volume + " has no snapshots; take one with: nbdtail snapshot create " + volume
                    + " NAME");
            } else {
                final List<String[]> table = new ArrayList<>();
                table.add(new String[] {"NAME", "CREATED", "OWNED", "PARENT", "LIVE CHAIN"});
                for (final JsonNode s : snapshots) {
                    table.add(new String[] {s.path("name").asText(), s.path("created").asText(),
                        io.nbdtail.volume.Sizes.format(s.path("ownedBytes").asLong()),
                        s.path("parent").isNull() ? "-" : s.path("parent").asText(),
                        s.path("inLiveChain").asBoolean() ? "yes" : "no"});
                }
                Output.table(out, table);
            }
            out.flush();
        }
        return 0;
    }

    public static int delete(final CommandSpec spec, final ServerOptions server, final String volume,
                             final String name, final boolean wait, final boolean json) throws IOException {
        try (ApiClient api = server.connect()) {
            final JsonNode operation = api.delete(base(volume) + "/" + ApiClient.segment(name));
            if (wait) {
                return OperationWait.finish(spec, OperationWait.of(spec, api, json).await(operation), json);
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, operation);
            } else {
                out.println("deleting snapshot " + volume + "@" + name + " (merging its layer): operation "
                    + operation.path("id").asText() + "; follow it with: nbdtail operation get "
                    + operation.path("id").asText() + " --wait");
            }
            out.flush();
        }
        return 0;
    }

    public static int rollback(final CommandSpec spec, final ServerOptions server, final String volume,
                               final String name) throws IOException {
        try (ApiClient api = server.connect()) {
            api.post(base(volume) + "/" + ApiClient.segment(name) + "/rollback", ApiClient.object());
        } catch (final ApiException e) {
            if (e.status() == 409 && e.getMessage().contains("client")) {
                throw e.withHint("list them with: nbdtail clients list " + volume + "; stop the VM first");
            }
            throw e;
        }
        spec.commandLine().getOut().println("rolled volume " + volume + " back to snapshot " + name);
        spec.commandLine().getOut().flush();
        return 0;
    }

    public static int cloneVolume(final CommandSpec spec, final ServerOptions server, final String volume,
                                  final String name, final String newVolume) throws IOException {
        try (ApiClient api = server.connect()) {
            final ObjectNode body = ApiClient.object();
            body.put("name", newVolume);
            api.post(base(volume) + "/" + ApiClient.segment(name) + "/clone", body);
        }
        spec.commandLine().getOut().println("created volume " + newVolume + " from " + volume + "@" + name);
        spec.commandLine().getOut().flush();
        return 0;
    }
}
