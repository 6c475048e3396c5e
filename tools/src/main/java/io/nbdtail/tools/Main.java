package io.nbdtail.tools;

import io.nbdtail.tools.online.AclCommand;
import io.nbdtail.tools.online.ClientsCommand;
import io.nbdtail.tools.online.CompletionCommand;
import io.nbdtail.tools.online.MirrorCommand;
import io.nbdtail.tools.online.OperationCommand;
import io.nbdtail.tools.online.StatusCommand;
import io.nbdtail.volume.VolumeException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.util.Properties;

/**
 * {@code nbdtail}: the server ({@code serve}); volume management offline on a data directory
 * ({@code volume ... --data-dir DIR}) or online through a running server's control API ({@code status},
 * {@code volume}, {@code clients}, {@code acl}, {@code operation}); and {@code completion} for bash.
 *
 * <p>Exit codes: 0 success, 1 failure (one line on stderr saying what was wrong and what to do; the stack trace
 * only with {@code NBDTAIL_DEBUG=1}), 2 bad usage (picocli's message and the usage help).
 */
@Command(name = "nbdtail", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
    description = "Block-storage server for tails: serves volumes to qemu over NBD.",
    subcommands = {ServeCommand.class, VolumeCommand.class, SnapshotCommand.class, CheckCommand.class,
        StatusCommand.class, ClientsCommand.class, AclCommand.class, OperationCommand.class, MirrorCommand.class,
        CompletionCommand.class, CommandLine.HelpCommand.class})
public final class Main {
    /** The exit code of a command that ran and failed. */
    public static final int EXIT_FAILED = 1;

    public static void main(final String[] args) {
        // The server logs at INFO; the offline commands speak through their output and log only problems.
        if ((args.length == 0 || !args[0].equals("serve")) && System.getenv("NBDTAIL_LOG_LEVEL") == null) {
            System.setProperty("nbdtail.log.level", "WARN");
        }
        System.exit(commandLine().execute(args));
    }

    /** The command line with nbdtail's error handling; {@link #main} runs it, and so do tests. */
    public static CommandLine commandLine() {
        return new CommandLine(new Main()).setExecutionExceptionHandler(Main::handleFailure);
    }

    private static int handleFailure(final Exception e, final CommandLine commandLine,
                                     final CommandLine.ParseResult parseResult) {
        final PrintWriter err = commandLine.getErr();
        final boolean expected = e instanceof VolumeException || e instanceof IOException
            || e instanceof UncheckedIOException || e instanceof IllegalArgumentException;
        if (expected && e.getMessage() != null) {
            err.println("nbdtail: " + e.getMessage());
        } else {
            err.println("nbdtail: unexpected error: " + e + "; run again with NBDTAIL_DEBUG=1 to see where, and"
                + " report it");
        }
        if ("1".equals(System.getenv("NBDTAIL_DEBUG"))) {
            e.printStackTrace(err);
        }
        err.flush();
        return EXIT_FAILED;
    }

    /** The version from the jar's manifest or Maven properties, or {@code dev} when run from classes. */
    static final class Version implements CommandLine.IVersionProvider {
        private static final String POM_PROPERTIES = "/META-INF/maven/io.nbdtail/nbdtail-tools/pom.properties";

        @Override
        public String[] getVersion() {
            return new String[] {"nbdtail " + version()};
        }

        static String version() {
            final String manifest = Main.class.getPackage().getImplementationVersion();
            if (manifest != null) {
                return manifest;
            }
            try (InputStream in = Main.class.getResourceAsStream(POM_PROPERTIES)) {
                if (in != null) {
                    final Properties properties = new Properties();
                    properties.load(in);
                    return properties.getProperty("version", "dev");
                }
            } catch (final IOException e) {
                // Fall through: a version string is not worth failing for.
            }
            return "dev";
        }
    }
}
