package io.nbdtail.tools.online;

import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.util.concurrent.Callable;

/** {@code nbdtail volume grow NAME --size SIZE}: through the control API only. */
@Command(name = "grow", mixinStandardHelpOptions = true,
    description = {"Grow a file volume on the running server.",
        "Connected clients see the new size once they reconnect (NBD cannot tell them)."})
public final class GrowCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;
    @Mixin
    private ServerOptions server;
    @Parameters(index = "0", paramLabel = "NAME")
    private String name;
    @Option(names = "--size", paramLabel = "SIZE", required = true, converter = SizeConverter.class,
        description = "The new size, larger than the current one: bytes, or 512M, 20G, 2T (powers of 1024).")
    private long size;
    @Option(names = "--json", description = "Print the grown volume as JSON, for scripts.")
    private boolean json;

    @Override
    public Integer call() throws Exception {
        return OnlineVolume.grow(spec, server, name, size, json);
    }
}
