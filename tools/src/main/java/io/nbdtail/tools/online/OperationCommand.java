package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code nbdtail operation list|get|cancel}: the running server's long operations (scrub, ...). */
@Command(name = "operation", mixinStandardHelpOptions = true,
    description = "List, follow and cancel the running server's long operations (such as scrub).",
    subcommands = {OperationCommand.ListOperations.class, OperationCommand.Get.class, OperationCommand.Cancel.class})
public final class OperationCommand {
    private OperationCommand() {
    }

    /** {@code operation list [--json]}: {@code GET /v1/operations}, newest first. */
    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the operations, newest first.")
    static final class ListOperations implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Option(names = "--json", description = "Print the API's JSON array, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final JsonNode operations;
            try (ApiClient api = server.connect()) {
                operations = api.get("/v1/operations");
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, operations);
                return 0;
            }
            if (operations.isEmpty()) {
                out.println("no operations; start one with, e.g.: nbdtail volume scrub NAME");
                out.flush();
                return 0;
            }
            final List<String[]> table = new ArrayList<>();
            table.add(new String[] {"ID", "KIND", "VOLUME", "STATE", "PROGRESS", "STARTED", "FINISHED"});
            for (final JsonNode op : operations) {
                table.add(new String[] {Output.text(op, "id"), Output.text(op, "kind"), Output.text(op, "volume"),
                    Output.text(op, "state"), OperationWait.details(op),
                    Output.time(op, "started"), op.path("finished").isTextual() ? Output.time(op, "finished") : "-"});
            }
            Output.table(out, table);
            return 0;
        }
    }

    /** {@code operation get ID [--wait] [--json]}: {@code GET /v1/operations/{id}}. */
    @Command(name = "get", mixinStandardHelpOptions = true,
        description = {"Show one operation; with --wait, follow it until it is over.",
            "With --wait the exit code is 1 if the operation failed or was cancelled."})
    static final class Get implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "ID")
        private String id;
        @Option(names = "--wait", description = "Wait until it is over, showing its progress.")
        private boolean wait;
        @Option(names = "--json", description = "Print the API's JSON (with --wait: once it is over).")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            try (ApiClient api = server.connect()) {
                final JsonNode operation = get(api, id);
                if (wait) {
                    return OperationWait.finish(spec, OperationWait.of(spec, api, json).await(operation), json);
                }
                final PrintWriter out = spec.commandLine().getOut();
                if (json) {
                    Output.json(out, operation);
                    return 0;
                }
                out.println("id:       " + Output.text(operation, "id"));
                out.println("kind:     " + Output.text(operation, "kind"));
                out.println("volume:   " + Output.text(operation, "volume"));
                out.println("state:    " + Output.text(operation, "state"));
                out.println("progress: " + OperationWait.details(operation));
                out.println("started:  " + Output.text(operation, "started"));
                out.println("finished: " + (operation.path("finished").isTextual()
                    ? Output.text(operation, "finished") : "-"));
                if (operation.path("error").isTextual()) {
                    out.println("error:    " + Output.text(operation, "error"));
                }
                out.flush();
                return 0;
            }
        }
    }

    /** {@code operation cancel ID [--json]}: {@code DELETE /v1/operations/{id}}. */
    @Command(name = "cancel", mixinStandardHelpOptions = true,
        description = "Cancel a running operation; one that is already over is left as it is.")
    static final class Cancel implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "ID")
        private String id;
        @Option(names = "--json", description = "Print the operation as the API's JSON, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final JsonNode operation;
            try (ApiClient api = server.connect()) {
                operation = api.delete("/v1/operations/" + ApiClient.segment(id));
            } catch (final ApiException e) {
                throw notFound(e, id);
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, operation);
                return 0;
            }
            final String state = operation.path("state").asText("?");
            final String what = "operation " + id + " (" + OperationWait.name(operation) + ")";
            out.println(switch (state) {
                case "cancelled" -> what + " is cancelled";
                case "running" -> "asked " + what + " to stop; see when it has: nbdtail operation get " + id
                    + " --wait";
                default -> what + " was already over (" + state + "); nothing to cancel";
            });
            out.flush();
            return 0;
        }
    }

    private static JsonNode get(final ApiClient api, final String id) throws ApiException {
        try {
            return api.get("/v1/operations/" + ApiClient.segment(id));
        } catch (final ApiException e) {
            throw notFound(e, id);
        }
    }

    /** A 404 with a pointer to the list. */
    private static ApiException notFound(final ApiException e, final String id) {
        return e.status() == 404 ? e.withHint("see the operations with: nbdtail operation list") : e;
    }
}
