package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code nbdtail acl get|set}: which networks may open a volume of the running server. */
@Command(name = "acl", mixinStandardHelpOptions = true,
    description = "Show or replace the networks allowed to open a volume on the running server.",
    subcommands = {AclCommand.Get.class, AclCommand.Set.class})
public final class AclCommand {
    private AclCommand() {
    }

    /** {@code acl get VOLUME [--json]}: {@code GET /v1/volumes/{name}/acl}. */
    @Command(name = "get", mixinStandardHelpOptions = true, description = "Show a volume's access list.")
    static final class Get implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "VOLUME")
        private String volume;
        @Option(names = "--json", description = "Print the API's JSON, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final JsonNode acl;
            try (ApiClient api = server.connect()) {
                acl = api.get("/v1/volumes/" + ApiClient.segment(volume) + "/acl");
            }
            print(spec, volume, acl, json);
            return 0;
        }
    }

    /** {@code acl set VOLUME CIDR... | --default | --none}: {@code PUT /v1/volumes/{name}/acl}. */
    @Command(name = "set", mixinStandardHelpOptions = true,
        description = {"Replace a volume's access list: CIDRs, --default or --none.",
            "Connected clients it no longer allows are disconnected.",
            "CIDR: IPv4 or IPv6 network such as 10.1.0.0/16; a bare address means that one host."})
    static final class Set implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "VOLUME")
        private String volume;
        @Parameters(index = "1..*", paramLabel = "CIDR", arity = "0..*",
            description = "The networks allowed; replaces the whole list.")
        private List<String> networks;
        @Option(names = "--default",
            description = "Remove the list, so the server's default policy applies (allow or deny).")
        private boolean serverDefault;
        @Option(names = "--none", description = "An empty list: nobody may open the volume.")
        private boolean none;
        @Option(names = "--json", description = "Print the new access list as the API's JSON, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final List<String> cidrs = networks == null ? List.of() : networks;
            final int choices = (cidrs.isEmpty() ? 0 : 1) + (serverDefault ? 1 : 0) + (none ? 1 : 0);
            if (choices != 1) {
                throw new CommandLine.ParameterException(spec.commandLine(), (choices == 0 ? "nothing to set"
                    : "CIDRs, --default and --none exclude each other") + ": give the networks allowed (acl set "
                    + volume + " 10.1.0.0/16 ...), --default for the server's default policy, or --none for nobody");
            }
            if (cidrs.stream().anyMatch(String::isBlank)) {
                throw new CommandLine.ParameterException(spec.commandLine(), "empty CIDR: give networks such as"
                    + " 10.1.0.0/16, or --none for an empty list");
            }
            final ObjectNode body = ApiClient.object();
            if (serverDefault) {
                body.putNull("allow");
            } else {
                final ArrayNode array = body.putArray("allow");
                cidrs.forEach(array::add);
            }
            final JsonNode acl;
            try (ApiClient api = server.connect()) {
                acl = api.put("/v1/volumes/" + ApiClient.segment(volume) + "/acl", body);
            }
            print(spec, volume, acl, json);
            return 0;
        }
    }

    private static void print(final CommandSpec spec, final String volume, final JsonNode acl, final boolean json) {
        final PrintWriter out = spec.commandLine().getOut();
        if (json) {
            Output.json(out, acl);
            return;
        }
        out.println("volume " + volume + " allows: " + Output.acl(acl));
        out.flush();
    }
}
