package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.concurrent.Callable;

/** {@code nbdtail clients list|kick}: the NBD clients connected to a volume of the running server. */
@Command(name = "clients", mixinStandardHelpOptions = true,
    description = "List and disconnect the NBD clients of a volume on the running server.",
    subcommands = {ClientsCommand.ListClients.class, ClientsCommand.Kick.class})
public final class ClientsCommand {
    private ClientsCommand() {
    }

    /** {@code clients list VOLUME [--json]}: {@code GET /v1/volumes/{name}/clients}. */
    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the clients connected to a volume.")
    static final class ListClients implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "VOLUME")
        private String volume;
        @Option(names = "--json", description = "Print the API's JSON array, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final JsonNode clients;
            try (ApiClient api = server.connect()) {
                clients = api.get("/v1/volumes/" + ApiClient.segment(volume) + "/clients");
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                Output.json(out, clients);
            } else {
                Output.clients(out, clients, volume);
            }
            return 0;
        }
    }

    /** {@code clients kick VOLUME CLIENT-ID}: {@code DELETE /v1/volumes/{name}/clients/{id}}. */
    @Command(name = "kick", mixinStandardHelpOptions = true,
        description = {"Disconnect one client, after its requests in flight are answered.",
            "It may reconnect: to keep it out, change the volume's access list (nbdtail acl set)."})
    static final class Kick implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "VOLUME")
        private String volume;
        @Parameters(index = "1", paramLabel = "CLIENT-ID", description = "The ID column of nbdtail clients list.")
        private String client;

        @Override
        public Integer call() throws Exception {
            try (ApiClient api = server.connect()) {
                api.delete("/v1/volumes/" + ApiClient.segment(volume) + "/clients/" + ApiClient.segment(client));
            } catch (final ApiException e) {
                if (e.error().equals("client_not_found")) {
                    throw e.withHint("see the connected ones with: nbdtail clients list " + volume);
                }
                throw e;
            }
            spec.commandLine().getOut().println("disconnected client " + client + " from volume " + volume);
            spec.commandLine().getOut().flush();
            return 0;
        }
    }
}
