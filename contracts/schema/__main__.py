from contracts.schema import write

for path in write():
    print(path)
