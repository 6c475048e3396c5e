package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code nbdtail status}: the running server's version, health and counts ({@code GET /v1/status}). */
@Command(name = "status", mixinStandardHelpOptions = true,
    description = "Show the running server's health, version, uptime, volumes and connections.")
public final class StatusCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;
    @Mixin
    private ServerOptions server;
    @Option(names = "--json", description = "Print the API's JSON, for scripts.")
    private boolean json;

    @Override
    public Integer call() throws Exception {
        final JsonNode s;
        final String url;
        try (ApiClient api = server.connect()) {
            s = api.get("/v1/status");
            url = api.baseUrl();
        }
        final PrintWriter out = spec.commandLine().getOut();
        if (json) {
            Output.json(out, s);
            return 0;
        }
        out.println("server:      " + url);
        out.println("health:      " + Output.text(s, "health"));
        out.println("version:     " + Output.text(s, "version"));
        out.println("uptime:      " + (s.path("uptimeSeconds").isNumber()
            ? Output.duration(s.path("uptimeSeconds").asLong()) : "?"));
        out.println("data dir:    " + Output.text(s, "dataDir") + (s.path("dataDirFreeBytes").isNumber()
            ? " (" + Output.size(s, "dataDirFreeBytes") + " free)" : ""));
        out.println("volumes:     " + Output.text(s, "volumeCount"));
        out.println("connections: " + Output.text(s, "connectionCount"));
        final JsonNode failed = s.path("failedVolumes");
        if (failed.isArray() && !failed.isEmpty()) {
            final List<String> names = new ArrayList<>();
            failed.forEach(n -> names.add(Output.oneLine(n.asText())));
            out.println("failed:      " + String.join(", ", names) + " (see nbdtail volume info NAME)");
        }
        out.flush();
        return 0;
    }
}
