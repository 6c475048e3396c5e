package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.concurrent.Callable;

/** {@code nbdtail volume scrub NAME [--rate BYTES/s] [--wait]}: through the control API only. */
@Command(name = "scrub", mixinStandardHelpOptions = true,
    description = {"Read a whole volume on the running server to find latent read errors.",
        "Runs as an operation on the server; --wait follows it to the end (Ctrl-C stops waiting, not the scrub)."})
public final class ScrubCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;
    @Mixin
    private ServerOptions server;
    @Parameters(index = "0", paramLabel = "NAME")
    private String name;
    @Option(names = "--rate", paramLabel = "BYTES/s", converter = SizeConverter.class,
        description = "Read at most this much per second, e.g. 50M (default: as fast as the disk allows).")
    private Long rate;
    @Option(names = "--wait", description = "Wait until the scrub is over, showing its progress; exit 1 if it"
        + " failed or was cancelled.")
    private boolean wait;
    @Option(names = "--json", description = "Print the operation as JSON (with --wait: once it is over).")
    private boolean json;

    @Override
    public Integer call() throws Exception {
        final ObjectNode body = ApiClient.object();
        if (rate != null) {
            body.put("bytesPerSecond", rate);
        }
        try (ApiClient api = server.connect()) {
            final JsonNode operation = api.post("/v1/volumes/" + ApiClient.segment(name) + "/scrub", body);
            if (wait) {
                return OperationWait.finish(spec, OperationWait.of(spec, api, json).await(operation), json);
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, operation);
                return 0;
            }
            final String id = operation.path("id").asText();
            out.println("started scrub of volume " + name + ": operation " + id + "; follow it with: nbdtail"
                + " operation get " + id + " --wait");
            out.flush();
            return 0;
        }
    }
}
